#!/usr/bin/env bash
# Makes a development CA and one certificate for the three services (names erp-gateway, erp-auth,
# erp-event, localhost and 127.0.0.1) under DIR (default .erp/grpc-tls), for mutual TLS between
# them: tls.crt, tls.key and ca.crt, the layout of a Kubernetes TLS Secret. Idempotent: existing
# files are kept. In a cluster, cert-manager issues these instead (see the chart's grpcTls values).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dir="${1:-$ROOT/.erp/grpc-tls}"
if [ -s "$dir/tls.crt" ] && [ -s "$dir/tls.key" ] && [ -s "$dir/ca.crt" ]; then
  exit 0
fi
if ! command -v openssl >/dev/null; then
  say "installing openssl"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openssl >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq openssl >/dev/null; fi
fi
mkdir -p "$dir"
(
  umask 077
  cd "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=erp development CA" -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=erp-services" -keyout tls.key -out tls.csr 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:erp-gateway,DNS:erp-auth,DNS:erp-event,DNS:localhost,IP:127.0.0.1" \
    "extendedKeyUsage=serverAuth,clientAuth" >ext.cnf
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile ext.cnf -out tls.crt 2>/dev/null
  rm -f tls.csr ext.cnf ca.srl
)
say "development gRPC certificates in $dir"
