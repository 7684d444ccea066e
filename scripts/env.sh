# Source this to put Millrace's installed tools first on PATH:
#   source scripts/env.sh
export MILLRACE_CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
case ":$PATH:" in
  *":$MILLRACE_CACHE/bin:"*) ;;
  *) export PATH="$MILLRACE_CACHE/bin:$PATH" ;;
esac
