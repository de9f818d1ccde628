#!/usr/bin/env bash
# The HTTPS certificate of the classifier's NGINX site (remote/setup.sh runs it; docs/https.md
# explains it). Two steps, because certbot's HTTP-01 challenge needs NGINX already serving:
#
#   remote/certificate.sh link     NGINX's certificate links and classifier-tls.conf, from the
#                                  best certificate here: the operator's (TLS_CERTIFICATE and
#                                  TLS_KEY), else Let's Encrypt's for DOMAIN, else a self-signed
#                                  one made now. Run it before NGINX starts or reloads.
#   remote/certificate.sh obtain   certbot gets (or renews when due) DOMAIN's certificate over
#                                  HTTP-01 through the running site, then links it and reloads
#                                  NGINX. Renewals (Debian's certbot.timer) reload it too.
#
# Settings, as environment variables:
#   DOMAIN           the site's name; with CERTBOT_EMAIL, or a certificate already obtained for it
#   CERTBOT_EMAIL    the ACME account's address (expiry warnings)
#   ACME_SERVER      the ACME directory [https://acme-v02.api.letsencrypt.org/directory];
#                    Let's Encrypt's staging: https://acme-staging-v02.api.letsencrypt.org/directory
#   TLS_CERTIFICATE  your own certificate (full chain, PEM) and ...
#   TLS_KEY          ... its key: used instead of any other
#   HSTS_MAX_AGE     seconds browsers keep to https once they saw it [31536000]; 0: no HSTS
# Where things are (the tests move them):
#   TLS_DIR [/etc/classifier/tls]  ACME_WEBROOT [/var/www/classifier-acme]
#   CERTBOT_DIR [/etc/letsencrypt]  CERTBOT_WORK_DIR [/var/lib/letsencrypt]
#   CERTBOT_LOGS_DIR [/var/log/letsencrypt]  TLS_SNIPPET [/etc/nginx/snippets/classifier-tls.conf]
#   NGINX_RELOAD [systemctl reload nginx]: the command that makes NGINX read its certificate again
set -euo pipefail

DOMAIN=${DOMAIN:-}
CERTBOT_EMAIL=${CERTBOT_EMAIL:-}
ACME_SERVER=${ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}
TLS_CERTIFICATE=${TLS_CERTIFICATE:-}
TLS_KEY=${TLS_KEY:-}
HSTS_MAX_AGE=${HSTS_MAX_AGE:-31536000}
TLS_DIR=${TLS_DIR:-/etc/classifier/tls}
ACME_WEBROOT=${ACME_WEBROOT:-/var/www/classifier-acme}
CERTBOT_DIR=${CERTBOT_DIR:-/etc/letsencrypt}
CERTBOT_WORK_DIR=${CERTBOT_WORK_DIR:-/var/lib/letsencrypt}
CERTBOT_LOGS_DIR=${CERTBOT_LOGS_DIR:-/var/log/letsencrypt}
TLS_SNIPPET=${TLS_SNIPPET:-/etc/nginx/snippets/classifier-tls.conf}
NGINX_RELOAD=${NGINX_RELOAD:-systemctl reload nginx}
TEMPLATE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/nginx/classifier-tls.conf"
LIVE="$CERTBOT_DIR/live/$DOMAIN"

die() { printf 'certificate.sh: %s\n' "$*" >&2; exit 1; }
[[ -z $DOMAIN || $DOMAIN =~ ^[A-Za-z0-9.-]+$ ]] || die "DOMAIN is not a host name: $DOMAIN"
[[ -z $TLS_CERTIFICATE && -z $TLS_KEY || -r $TLS_CERTIFICATE && -r $TLS_KEY ]] \
    || die "TLS_CERTIFICATE and TLS_KEY go together, and both must be readable files"
[[ $HSTS_MAX_AGE =~ ^[0-9]+$ ]] || die "HSTS_MAX_AGE must be a whole number of seconds"

# A key and certificate for this name that no browser trusts, valid ten years.
self_signed() {
    local name=${DOMAIN:-$(hostname -f 2>/dev/null || hostname)}
    if [[ ! -s $TLS_DIR/self-signed.pem ]]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
            -keyout "$TLS_DIR/self-signed.key" -out "$TLS_DIR/self-signed.pem" 2>/dev/null
        chmod 600 "$TLS_DIR/self-signed.key"
    fi
    cat >&2 <<MSG
certificate.sh: NGINX serves https with a SELF-SIGNED certificate for "$name".
  Browsers warn that the site is not secure until a visitor accepts it, and clients such as
  curl or a forwarding instance refuse it unless told to trust it; the traffic is encrypted,
  but nothing proves to a visitor that it is this server. So plain http keeps serving
  everything (no redirect) and no HSTS is sent. To replace it, run remote/setup.sh again with
  DOMAIN=your.name CERTBOT_EMAIL=you@example.org (a free Let's Encrypt certificate), or with
  TLS_CERTIFICATE=/path/fullchain.pem TLS_KEY=/path/key.pem (your own).
MSG
}

# Points NGINX's links at the best certificate here and writes classifier-tls.conf for it.
link() {
    local cert key trusted=yes
    install -d -m 755 "$TLS_DIR" "$ACME_WEBROOT"
    if [[ -n $TLS_CERTIFICATE ]]; then
        cert=$TLS_CERTIFICATE key=$TLS_KEY
    elif [[ -n $DOMAIN && -e $LIVE/fullchain.pem ]]; then
        cert=$LIVE/fullchain.pem key=$LIVE/privkey.pem
    else
        self_signed
        cert=$TLS_DIR/self-signed.pem key=$TLS_DIR/self-signed.key trusted=no
    fi
    ln -sfn "$cert" "$TLS_DIR/fullchain.pem"
    ln -sfn "$key" "$TLS_DIR/privkey.pem"
    local hsts="max-age=$HSTS_MAX_AGE" redirect=1
    [[ $HSTS_MAX_AGE != 0 ]] || hsts=""
    [[ $trusted == yes ]] || hsts="" redirect=0
    sed -e "s#/etc/classifier/tls/#$TLS_DIR/#" \
        -e "s#^    on      \"max-age=31536000\";#    on      \"$hsts\";#" \
        -e "s#^    \"~^http:\"                               1;#    \"~^http:\"                               $redirect;#" \
        "$TEMPLATE" > "$TLS_SNIPPET.new"
    grep -q "on      \"$hsts\";" "$TLS_SNIPPET.new" && grep -q "http:\" *$redirect;" "$TLS_SNIPPET.new" \
        || die "$TEMPLATE no longer has the lines this script sets"
    mv "$TLS_SNIPPET.new" "$TLS_SNIPPET"
    echo "https certificate: $cert (redirect from http: $([[ $redirect == 1 ]] && echo yes || echo no), HSTS: ${hsts:-none})"
}

# certbot's HTTP-01 through the running site's webroot, then the new certificate linked.
obtain() {
    [[ -n $DOMAIN ]] || die "obtain needs DOMAIN"
    [[ -n $CERTBOT_EMAIL || -e $LIVE/fullchain.pem ]] || die "a first certificate needs CERTBOT_EMAIL"
    certbot certonly --webroot --webroot-path "$ACME_WEBROOT" --domain "$DOMAIN" \
        --non-interactive --agree-tos ${CERTBOT_EMAIL:+--email "$CERTBOT_EMAIL"} \
        --server "$ACME_SERVER" --keep-until-expiring --deploy-hook "$NGINX_RELOAD" \
        --config-dir "$CERTBOT_DIR" --work-dir "$CERTBOT_WORK_DIR" --logs-dir "$CERTBOT_LOGS_DIR"
    link
    sh -c "$NGINX_RELOAD"
}

case ${1:-} in
    link) link ;;
    obtain) obtain ;;
    *) die "usage: $0 link|obtain" ;;
esac
