#!/bin/sh
# As registry:2's entrypoint: a configuration file as the first argument
# runs `registry serve FILE`; a registry subcommand runs it; anything else
# is run as given.
set -e
case "${1:-}" in
*.yaml | *.yml) set -- registry serve "$@" ;;
serve | garbage-collect | help | -*) set -- registry "$@" ;;
esac
exec "$@"
