// The upload page's behaviour, one module per concern in static/page/: choose, drop or paste an
// image, send it to /predict with fetch and draw the answer into the page's own <template>s.
// Without these files the form still works: it posts to "/" and the server renders the same
// markup. This module only starts the others and ties their events together. Each import
// carries its module's content hash (classifier/web/static_modules.py writes them).

import { classify, reclassify } from "./page/answer.js?v=00db0cc2589e";
import * as apiPanel from "./page/api-panel.js?v=1c985eed8428";
import * as camera from "./page/camera.js?v=a7fa8dfd569c";
import * as chooser from "./page/chooser.js?v=a9378130f12e";
import { $ } from "./page/dom.js?v=19cca49a794f";
import * as explain from "./page/explain.js?v=f1f10ef0fcbc";
import { describeModel, refreshModels } from "./page/models.js?v=7320a2652e5b";
import * as options from "./page/options.js?v=8b87c046b7b2";
import * as preview from "./page/preview.js?v=4981db65fce4";
import * as queue from "./page/queue.js?v=b8f70e533c9f";
// The modules those import, named here too: the browser then asks for every module as soon as
// this file arrives, not one level of imports at a time (bench/page_load.py).
import "./page/api.js?v=0b826a6c63b5";
import "./page/errors.js?v=a35837132922";
import "./page/format.js?v=95e4a7f170c8";
import "./page/report.js?v=7089b2df97e7";
import "./page/storage.js?v=75d82e02cecc";

const form = $("classify-form");
const { urlInput } = options;

function showServer() {
  options.requireUrl();
  describeModel();
}

function startOptions() {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    classify();
  });
  form.querySelectorAll('input[name="server"]').forEach((radio) => radio.addEventListener("change", () => {
    options.rememberServer();
    showServer();
    reclassify();
  }));
  $("model").addEventListener("change", () => {
    describeModel();
    reclassify();
  });
  $("top_k").addEventListener("change", () => {
    options.clampTopK();
    reclassify();
  });
  if (urlInput) {
    urlInput.addEventListener("change", () => {
      options.checkUrl();
      options.rememberUrl();
      if (options.serverChoice() === "custom") reclassify();
    });
    urlInput.addEventListener("input", options.hideUrlCheck);
  }
}

queue.start();
camera.start();
apiPanel.start(); // its commands before the recalled server: as the page first rendered them
chooser.start();
preview.start();
startOptions();
explain.start();

options.recallServer();
explain.recall();
if (urlInput && urlInput.value) options.checkUrl();
showServer();
refreshModels();
