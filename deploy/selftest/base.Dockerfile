# A stand-in for python:3.11-slim-bookworm, built on a debootstrapped Debian bookworm (minbase)
# when no image registry is reachable. Debian's python3 is 3.11 on bookworm; the machine's CA
# bundle is copied in so that pip inside later builds trusts the same registries the host does.
FROM phenolab-selftest/bookworm-minbase
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && ln -s /usr/bin/python3 /usr/local/bin/python \
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
