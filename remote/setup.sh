#!/usr/bin/env bash
# Set up, or update, an Ubuntu 24.04 host for the image classifier: uWSGI as a systemd
# service behind NGINX. Safe to run again: it converges on the same result, and running it
# after updating the code deploys that code with a reload that loses no request.
#
#   sudo remote/setup.sh                                                  one host, self-signed HTTPS
#   sudo DOMAIN=classifier.example.org CERTBOT_EMAIL=you@example.org remote/setup.sh    + Let's Encrypt
#   sudo UWSGI_SOCKET=10.0.1.11:8001 NGINX=no remote/setup.sh            an app host of several
#   sudo APP=no APP_HOSTS="10.0.1.11:8001 10.0.1.12:8001" remote/setup.sh the front host
#
# Settings, as environment variables:
#   APP_DIR        where the service runs from [/srv/classifier]; this repository is copied there
#   APP            yes|no: run uWSGI on this host [yes]
#   NGINX          yes|no: run NGINX on this host [yes]
#   DOMAIN         NGINX's server_name [_, any name]
#   CERTBOT_EMAIL  with DOMAIN: get a Let's Encrypt certificate (certbot, HTTP-01 through this
#                  site), renewed by certbot.timer; http then redirects to https, with HSTS
#                  (later runs keep renewing/installing it with DOMAIN alone). Without one,
#                  NGINX serves https with a self-signed certificate and http as well
#   ACME_SERVER    the ACME directory [Let's Encrypt's]; HSTS_MAX_AGE [31536000 s]
#   TLS_CERTIFICATE, TLS_KEY   your own certificate (full chain) and key instead
#                  (remote/certificate.sh and docs/https.md say more)
#   HTPASSWD       a private site: this htpasswd file's users only (all but /healthz);
#                  HTPASSWD=none makes the site public again [kept as it is]
#   APP_HOSTS      makes this the front host: spread the work over these uWSGI addresses
#   UWSGI_SOCKET   where uWSGI listens [127.0.0.1:8001]    } kept in
#   PROCESSES      uWSGI worker processes [2]              } /etc/classifier/classifier.env
#   MODELS         Keras models whose weights to download now, e.g. "MobileNetV2 ResNet50"
#                  (EfficientNetLite0 needs none: its weights come with pip); every model
#                  whose weights are here then gets its ONNX export made and checked
set -euo pipefail

APP_DIR=${APP_DIR:-/srv/classifier}
APP=${APP:-yes}
NGINX=${NGINX:-yes}
DOMAIN=${DOMAIN:-}
CERTBOT_EMAIL=${CERTBOT_EMAIL:-}
APP_HOSTS=${APP_HOSTS:-}
UWSGI_SOCKET=${UWSGI_SOCKET:-}
PROCESSES=${PROCESSES:-}
MODELS=${MODELS:-}
TLS_CERTIFICATE=${TLS_CERTIFICATE:-}
HTPASSWD=${HTPASSWD:-}
# remote/certificate.sh reads these, and ACME_SERVER, TLS_KEY and HSTS_MAX_AGE, from the environment.
export DOMAIN CERTBOT_EMAIL TLS_CERTIFICATE

SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICE_USER=classifier
STATE_DIR=/var/lib/classifier
ENV_FILE=/etc/classifier/classifier.env

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'setup.sh: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run it as root: sudo $0"
[[ $APP == yes || $APP == no ]] || die "APP must be yes or no"
[[ $NGINX == yes || $NGINX == no ]] || die "NGINX must be yes or no"
[[ -z $CERTBOT_EMAIL || -n $DOMAIN ]] || die "CERTBOT_EMAIL needs DOMAIN"
[[ -z $DOMAIN || $DOMAIN =~ ^[A-Za-z0-9.-]+$ ]] || die "DOMAIN is not a host name: $DOMAIN"
[[ -z $PROCESSES || $PROCESSES =~ ^[1-9][0-9]*$ ]] || die "PROCESSES must be a whole number"
# shellcheck disable=SC1091
. /etc/os-release
[[ ${ID:-} == ubuntu ]] || echo "warning: written for Ubuntu 24.04; this is ${PRETTY_NAME:-unknown}" >&2

# Writes stdin to $1 (mode $2) only if it differs; says whether it did via $CHANGED.
CHANGED=no
install_text() {
    local target=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
    else
        install -m "$mode" "$tmp" "$target"
        rm -f "$tmp"
        CHANGED=yes
        echo "wrote $target"
    fi
}

# A configuration file from the repository with this host's paths, domain and app hosts in.
render() {
    local private=no
    [[ -s /etc/classifier/htpasswd ]] && private=yes
    APP_DIR=$APP_DIR DOMAIN=$DOMAIN APP_HOSTS=$APP_HOSTS PRIVATE=$private python3 - "$1" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read().replace("/srv/classifier", os.environ["APP_DIR"])
if os.environ["PRIVATE"] == "yes":
    text = text.replace('map "" $classifier_auth_realm {\n    default "off";', 'map "" $classifier_auth_realm {\n    default "Image classifier";')
if os.environ["DOMAIN"]:
    text = text.replace("server_name _;", f"server_name {os.environ['DOMAIN']};")
hosts = os.environ["APP_HOSTS"].split()
if hosts and "classifier.internal:8001" in text:
    lines = "".join(f"    server {host} max_fails=2 fail_timeout=10s;\n" for host in hosts)
    text = re.sub(r"(    server app\d\.classifier\.internal:8001 .*\n)+", lambda _: lines, text)
sys.stdout.write(text)
PY
}

set_env() {  # set_env NAME VALUE: one line in $ENV_FILE
    if grep -q "^$1=" "$ENV_FILE"; then
        sed -i "s#^$1=.*#$1=$2#" "$ENV_FILE"
    else
        echo "$1=$2" >> "$ENV_FILE"
    fi
}

classifier_cli() {  # python3 -m classifier "$@" as the service runs: its user, its settings
    # shellcheck source=/dev/null  # KEY=value lines, written below
    (cd "$APP_DIR" && export KERAS_HOME="$STATE_DIR/keras" && set -a && . "$ENV_FILE" && set +a \
        && runuser -u "$SERVICE_USER" -- "$APP_DIR/venv/bin/python" -m classifier "$@")
}

log "packages"
packages=(python3 rsync curl ca-certificates)
[[ $APP == yes ]] && packages+=(python3-venv python3-dev build-essential)
[[ $NGINX == yes ]] && packages+=(nginx)
[[ $NGINX == yes ]] && packages+=(openssl)
[[ $NGINX == yes && -n $DOMAIN ]] && packages+=(certbot)
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "the pinned requirements need Python 3.11 or newer (Ubuntu 24.04 has 3.12)"

log "code in $APP_DIR"
if [[ $SOURCE != "$APP_DIR" ]]; then
    install -d -m 755 "$APP_DIR"
    rsync -a --delete --chown=root:root --chmod=Dgo+rx,Fgo+r \
        --exclude=.git/ --exclude=/venv/ --exclude=/.venv/ --exclude=__pycache__/ --exclude=.pytest_cache/ \
        "$SOURCE/" "$APP_DIR/"
fi

if [[ $APP == yes ]]; then
    log "uWSGI service"
    id -u "$SERVICE_USER" >/dev/null 2>&1 \
        || useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    [[ -x $APP_DIR/venv/bin/python ]] || python3 -m venv "$APP_DIR/venv"
    "$APP_DIR/venv/bin/pip" install -q --upgrade pip
    "$APP_DIR/venv/bin/pip" install -q -r "$APP_DIR/requirements.txt" -r "$APP_DIR/remote/requirements.txt"
    install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 750 "$STATE_DIR" "$STATE_DIR/keras"

    install -d -m 755 /etc/classifier
    if [[ ! -f $ENV_FILE ]]; then
        install -m 644 /dev/null "$ENV_FILE"
        cat > "$ENV_FILE" <<'EOF'
# Settings of the classifier service, read by systemd (remote/systemd/classifier.service).
# uWSGI's in uwsgi.ini, the app's in classifier/config.py. After a change:
#   sudo systemctl restart classifier
# CLASSIFIER_UWSGI_SOCKET=127.0.0.1:8001
# Workers: one per core; each takes one prediction at a time (remote/README.md sizes them
# from memory). Keep one thread per worker (uwsgi.ini's default): with more, uWSGI's single
# harakiri timer per worker fails requests (uwsgi.ini explains); add workers instead.
# CLASSIFIER_UWSGI_PROCESSES=2
# CLASSIFIER_DEFAULT_MODEL=EfficientNetLite0
# CLASSIFIER_MAX_UPLOAD_BYTES=10485760
# Log lines: one JSON object each (uwsgi.ini's default, for a log shipper), or plain text.
# CLASSIFIER_LOG_FORMAT=json
# Who may read /metrics, besides NGINX's list (remote/README.md, Monitoring):
# CLASSIFIER_METRICS_ALLOW=127.0.0.0/8,::1
EOF
    fi
    env_before=$(md5sum < "$ENV_FILE")
    [[ -z $UWSGI_SOCKET ]] || set_env CLASSIFIER_UWSGI_SOCKET "$UWSGI_SOCKET"
    [[ -z $PROCESSES ]] || set_env CLASSIFIER_UWSGI_PROCESSES "$PROCESSES"
    env_changed=no
    [[ $(md5sum < "$ENV_FILE") == "$env_before" ]] || env_changed=yes

    if [[ -n $MODELS ]]; then
        log "weights for $MODELS"
        # shellcheck disable=SC2086  # one argument per model
        classifier_cli download $MODELS
    fi
    # Made and checked now, once, for every model whose weights are here, so that no worker
    # spends a request on it (seconds to a minute per model). A model whose weights arrive
    # later is exported by the first worker that loads it. A model without a usable export
    # still works, on Keras, so that does not stop the deploy.
    # Their int8 forms too where memory allows: quantizing one holds every calibration image's
    # intermediate outputs, up to 7.5 GB for a minute (ResNet50; docs/int8.md). On a
    # smaller host, make them elsewhere with the same versions and copy the exports folder.
    log "ONNX exports"
    int8=()
    if (( $(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) < 8 * 1024 * 1024 )); then
        int8=(--no-int8)
        echo "note: under 8 GiB of memory free: no int8 forms made (python3 -m classifier export NAME-int8 on a larger host)" >&2
    fi
    classifier_cli export "${int8[@]}" || echo "warning: the models named above run on Keras, not ONNX Runtime" >&2

    CHANGED=no
    render "$APP_DIR/remote/systemd/classifier.service" | install_text /etc/systemd/system/classifier.service 644
    systemctl daemon-reload
    systemctl enable -q classifier
    if [[ $CHANGED == yes || $env_changed == yes ]] || ! systemctl is-active -q classifier; then
        systemctl restart classifier
    else
        systemctl reload classifier  # new code, workers replaced one at a time
    fi
fi

if [[ $NGINX == yes ]]; then
    log "NGINX"
    site=classifier.conf
    [[ -z $APP_HOSTS ]] || site=classifier-cluster.conf
    # A private site: NGINX (www-data) reads the users' hashed passwords, nobody else.
    install -d -m 755 /etc/classifier
    if [[ $HTPASSWD == none ]]; then
        rm -f /etc/classifier/htpasswd
    elif [[ -n $HTPASSWD ]]; then
        [[ -s $HTPASSWD ]] || die "HTPASSWD: no such file: $HTPASSWD (docs/https.md says how to make one)"
        install -m 640 -o root -g www-data "$HTPASSWD" /etc/classifier/htpasswd
    fi
    for snippet in classifier-http.conf classifier-locations.conf; do
        render "$APP_DIR/remote/nginx/$snippet" | install_text "/etc/nginx/snippets/$snippet" 644
    done
    render "$APP_DIR/remote/nginx/$site" | install_text /etc/nginx/sites-available/classifier 644
    ln -sfn ../sites-available/classifier /etc/nginx/sites-enabled/classifier
    rm -f /etc/nginx/sites-enabled/default  # ours is the default server now
    # Debian's nginx.conf sets TLS at http level too: its lines give way to classifier-tls.conf's.
    "$APP_DIR/remote/nginx-conf.sh" /etc/nginx/nginx.conf
    # The best certificate here (the operator's, Let's Encrypt's, else a self-signed one made
    # now) and classifier-tls.conf for it: NGINX needs one to start on 443.
    "$APP_DIR/remote/certificate.sh" link
    nginx -t
    systemctl enable -q nginx
    systemctl reload-or-restart nginx

    # certbot answers the CA's HTTP-01 challenge through the running site's webroot; the site
    # file stays ours. It reuses the certificate it has, renews it only when due, and its
    # deploy hook reloads NGINX on every renewal that certbot.timer makes.
    if [[ -n $DOMAIN && -z $TLS_CERTIFICATE && ( -n $CERTBOT_EMAIL || -d /etc/letsencrypt/live/$DOMAIN ) ]]; then
        log "certificate for $DOMAIN"
        "$APP_DIR/remote/certificate.sh" obtain
        systemctl enable -q --now certbot.timer
    fi
    if command -v ufw >/dev/null && ufw status | grep -q "Status: active"; then
        ufw allow 'Nginx Full'
    fi
fi

if [[ $APP == yes && $NGINX == yes ]]; then
    log "check"
    # The first start loads the default model (GET /readyz: 503 until then): give it a minute.
    # Over https, where the site serves everything (-k: the certificate names DOMAIN, not 127.0.0.1).
    curl -kfsS --retry 30 --retry-delay 2 --retry-all-errors https://127.0.0.1/readyz >/dev/null \
        || die "the site does not answer; see: journalctl -u classifier; tail /var/log/nginx/error.log"
    echo "the classifier answers on https://${DOMAIN:-$(hostname -I | awk '{print $1}')}/"
fi
