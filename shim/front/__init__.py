"""Front-proxy configurations generated from the shim's own config and route table (`shim front-config`)."""

DEFAULT_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"  # Debian, Ubuntu, Alpine (ca-certificates)
