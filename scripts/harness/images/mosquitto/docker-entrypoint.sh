#!/bin/sh
# As the official eclipse-mosquitto image's entrypoint: started as root, give
# /mosquitto to the broker's user (mosquitto itself then drops root for the
# `user` of its config, mosquitto by default); started as any other user
# (runAsUser: 1883), change nothing. Then run the command.
set -e
if [ "$(id -u)" = 0 ]; then
  [ -d /mosquitto ] && chown -R mosquitto:mosquitto /mosquitto 2>/dev/null || true
fi
exec "$@"
