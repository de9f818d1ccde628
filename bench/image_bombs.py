"""What each hostile image of tests/hostile.py costs to prepare for a 224x224 model.

    python3 bench/image_bombs.py

Each file is built, then handed to ``images.model_input`` with the default limits in a
Python process of its own, so one file's memory cannot hide another's. Prints the CPU time,
the peak resident size above the process's size before the call (VmHWM, reset through
/proc/self/clear_refs; Linux only) and the answer: "ok" or the error's code. README, "How an
image is prepared", and SECURITY.md carry these figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile import IMAGE_BOMBS  # noqa: E402

MEASURE = """
import sys, time
from pathlib import Path
sys.path[:0] = [{root!r}, {root!r} + "/tests"]
from hostile import IMAGE_BOMBS
from classifier import images
from classifier.errors import ClassifierError

def kib(field):
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0])

data = IMAGE_BOMBS[{name!r}][0]()
Path("/proc/self/clear_refs").write_text("5")
before, started = kib("VmRSS"), time.process_time()
try:
    images.model_input(data, 224)
    answer = "ok"
except ClassifierError as error:
    answer = error.code
print(f"{{len(data):>10,}} B {{time.process_time() - started:6.2f}} s {{(kib('VmHWM') - before) / 1024:6.0f}} MiB  {{answer}}")
"""


def main() -> None:
    print(f"{'file':40} {'size':>12} {'CPU':>8} {'peak':>10}  answer")
    for name in IMAGE_BOMBS:
        script = MEASURE.format(root=str(ROOT), name=name)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        print(f"{name:40} {result.stdout.rstrip()}", flush=True)


if __name__ == "__main__":
    main()
