#!/bin/sh
# Makes Debian's (and Ubuntu's) nginx.conf fit classifier-tls.conf: it sets ssl_protocols
# (TLS 1.0 and 1.1 too) and ssl_prefer_server_ciphers at http level, where the snippet sets its
# own, so the two protocol lists would merge (TLS 1.0 and 1.1 back on) and the second
# ssl_prefer_server_ciphers stops NGINX. Both lines are commented out, saying why; running it
# again changes nothing. remote/setup.sh and the Containerfile's nginx stage run it.
#
#   remote/nginx-conf.sh [/etc/nginx/nginx.conf]
set -eu
sed -i -E 's/^([[:space:]]*ssl_(protocols|prefer_server_ciphers)[[:space:]])/# classifier-tls.conf sets this: \1/' \
    "${1:-/etc/nginx/nginx.conf}"
