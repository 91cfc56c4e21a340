#!/usr/bin/env bash
# Installs the Debian font packages that the shipped handwriting model's generated digits were
# printed from (mnistlab.data.synthetic; docs/data.md, "Generated digits"). Only needed to
# rebuild that model or to train with --set generated_digits=N on the same fonts; the tests use
# matplotlib's own fonts. Nothing is downloaded but the distribution's packages.
set -euo pipefail
exec bash "$(dirname "$0")/apt_install.sh" "generated digits" \
    fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-freefont-ttf fonts-urw-base35 \
    fonts-go fonts-lato fonts-open-sans fonts-roboto-unhinted fonts-ebgaramond fonts-linuxlibertine \
    fonts-sil-gentium fonts-sil-andika fonts-cantarell fonts-quicksand fonts-comfortaa \
    fonts-b612 fonts-courier-prime fonts-ocr-b fonts-opendin fonts-osifont fonts-opendyslexic \
    fonts-dkg-handwriting fonts-breip fonts-bwht fonts-dancingscript fonts-ecolier-court \
    fonts-femkeklaver fonts-humor-sans fonts-comic-neue fonts-kaushanscript fonts-kristi \
    fonts-rufscript fonts-cabinsketch
