#!/bin/bash
# Run with: rapid-healthcheck PORT PATH   (the images' HEALTHCHECK and the compose file's)
#
# Exits 0 when http://127.0.0.1:PORT/PATH answers 200. The images carry no curl or wget: bash's
# /dev/tcp speaks the little HTTP/1.1 this needs.
set -u
port=${1:?usage: rapid-healthcheck PORT PATH}
path=${2:-/}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
IFS= read -r -t 5 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200"* ]]
