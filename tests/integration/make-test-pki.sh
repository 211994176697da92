#!/bin/sh
# Creates the integration tests' PKI in DIR with the openssl CLI (ECDSA P-256):
#   ca.pem ca-key.pem              "tapwire test CA" (tests pass it as --upstream-ca)
#   good.pem good-key.pem          CN good.test; DNS:good.test, DNS:alt.test,
#                                  DNS:*.wild.test, IP:127.0.0.1
#   other.pem other-key.pem        DNS:other.test only (name mismatch)
#   a.pem a-key.pem, b.pem b-key.pem   DNS:a.test / DNS:b.test (two SNI names, one IP)
#   expired.pem expired-key.pem    DNS:expired.test, valid 2020-01-01 .. 2021-01-01
#   evil-ca.pem evil-ca-key.pem    "evil test CA", never trusted by a test
#   untrusted.pem untrusted-key.pem   by the evil CA; DNS:good.test, IP:127.0.0.1
# Leaf files hold the leaf alone (no chain), so an untrusted leaf fails with
# "unable to get local issuer certificate".
# Idempotent: a complete DIR is left as it is; anything else is rebuilt in a
# scratch directory and moved into place, so a reader never sees half a PKI.
# Usage: make-test-pki.sh DIR
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
files="ca.pem ca-key.pem good.pem good-key.pem other.pem other-key.pem a.pem a-key.pem
b.pem b-key.pem expired.pem expired-key.pem evil-ca.pem evil-ca-key.pem untrusted.pem
untrusted-key.pem"

complete=yes
for f in $files; do
    [ -s "$dir/$f" ] || complete=no
done
if [ "$complete" = yes ] && [ -f "$dir/.complete" ]; then
    exit 0
fi

mkdir -p "$dir"
work=$(mktemp -d "$dir/.pki.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# Quiet unless it fails; then show what openssl said.
run() {
    if ! "$@" > "$work/log" 2>&1; then
        echo "make-test-pki: failed: $*" >&2
        cat "$work/log" >&2
        exit 1
    fi
}

key() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$1"
}

# ca NAME "Common Name"
ca() {
    key "$1-key.pem"
    run openssl req -new -x509 -key "$work/$1-key.pem" -out "$work/$1.pem" -days 3650 \
        -subj "/O=tapwire tests/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
}

# leaf NAME ISSUER CN SAN
leaf() {
    key "$1-key.pem"
    run openssl req -new -key "$work/$1-key.pem" -out "$work/$1.csr" -subj "/CN=$3"
    cat > "$work/$1.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$4
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    run openssl x509 -req -in "$work/$1.csr" -CA "$work/$2.pem" -CAkey "$work/$2-key.pem" \
        -CAcreateserial -CAserial "$work/$2.srl" -days 825 -sha256 \
        -extfile "$work/$1.ext" -out "$work/$1.pem"
}

ca ca "tapwire test CA"
ca evil-ca "evil test CA"
leaf good ca good.test "DNS:good.test,DNS:alt.test,DNS:*.wild.test,IP:127.0.0.1"
leaf other ca other.test "DNS:other.test"
leaf a ca a.test "DNS:a.test"
leaf b ca b.test "DNS:b.test"
leaf untrusted evil-ca good.test "DNS:good.test,IP:127.0.0.1"

# A validity window in the past needs 'openssl ca' (-startdate/-enddate);
# 'openssl x509 -req' only counts days from now.
key expired-key.pem
run openssl req -new -key "$work/expired-key.pem" -out "$work/expired.csr" -subj "/CN=expired.test"
mkdir -p "$work/db"
: > "$work/db/index.txt"
echo 1000 > "$work/db/serial"
cat > "$work/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $work/db
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
certificate = $work/ca.pem
private_key = $work/ca-key.pem
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = leaf_ext
[any]
commonName = supplied
[leaf_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:expired.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
run openssl ca -batch -notext -config "$work/ca.cnf" -in "$work/expired.csr" \
    -startdate 20200101000000Z -enddate 20210101000000Z -out "$work/expired.pem"

chmod 600 "$work"/*-key.pem
for f in $files; do
    mv -f "$work/$f" "$dir/$f"
done
: > "$dir/.complete"
