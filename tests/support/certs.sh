#!/bin/sh
# Creates throw-away TLS material for tests in DIR (default: ./testcerts):
#   ca.pem ca.key          test CA
#   server.pem server.key  leaf for localhost, 127.0.0.1 and ::1, signed by the CA
#   wrong.pem wrong.key    leaf for wrong.example only, signed by the CA
#   self.pem self.key      self-signed leaf for localhost (not trusted by the CA)
#   server.pin wrong.pin   hex SHA-256 of the leaf's SubjectPublicKeyInfo
# Keys are EC P-256: fast to make, so each test run gets fresh ones.
# Usage: certs.sh DIR      (needs the openssl command line tool)
set -eu

dir=${1:-testcerts}
mkdir -p "$dir"
cd "$dir"

days=3650
subj_ca="/O=Sluice Test/CN=Sluice Test CA"

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

pin() {
    openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER |
        openssl dgst -sha256 -r | cut -d' ' -f1 >"$2"
}

# leaf NAME CN SAN
leaf() {
    newkey "$1.key"
    openssl req -new -key "$1.key" -subj "/O=Sluice Test/CN=$2" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$days" -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
    pin "$1.pem" "$1.pin"
}

newkey ca.key
openssl req -x509 -new -key ca.key -subj "$subj_ca" -days "$days" -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null

leaf server localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
leaf wrong wrong.example "DNS:wrong.example"

newkey self.key
openssl req -x509 -new -key self.key -subj "/O=Sluice Test/CN=localhost" -days "$days" -sha256 \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -out self.pem 2>/dev/null
pin self.pem self.pin
rm -f ca.srl
