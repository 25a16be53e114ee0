#!/usr/bin/env bash
# The dependency rule between folders (README.md, "Layout"): a file includes only headers of its
# own folder and of the folders its folder may use. Lower layers first:
#   solvers, models/base < models/tokenizers < models < runner/core < runner/data, runner/dist
#   < runner/fuse
#   < runner/rotate, runner/quantize, runner/eval < runner/cell < runner/record < runner/cli
# The linker checks the same rule for the code (tests/CMakeLists.txt: rotq_link_check_*).
#   tests/layering_test.sh SOURCE_DIR
set -euo pipefail
cd "$1"

declare -A may_use=(
  [solvers]="solvers"
  [models/base]="models/base solvers"
  [models/tokenizers]="models/tokenizers models/base solvers"
  [models]="models models/tokenizers models/base solvers"
  [runner/core]="runner/core models models/tokenizers models/base solvers"
  [runner/data]="runner/data runner/core models models/tokenizers models/base solvers"
  [runner/dist]="runner/dist runner/core models models/tokenizers models/base solvers"
  [runner/fuse]="runner/fuse models models/tokenizers models/base solvers"
  [runner/rotate]="runner/rotate runner/fuse runner/data runner/dist runner/core models models/tokenizers models/base solvers"
  [runner/quantize]="runner/quantize runner/data runner/dist runner/core models models/tokenizers models/base solvers"
  [runner/eval]="runner/eval runner/data runner/dist runner/core models models/tokenizers models/base solvers"
  [runner/cell]="runner/cell runner/rotate runner/quantize runner/eval runner/fuse runner/data runner/dist runner/core models models/tokenizers models/base solvers"
  [runner/record]="runner/record runner/cell runner/rotate runner/quantize runner/eval runner/fuse runner/data runner/dist runner/core models models/tokenizers models/base solvers"
  [runner/cli]="runner/cli runner/record runner/cell runner/rotate runner/quantize runner/eval runner/fuse runner/data runner/dist runner/core models models/tokenizers models/base solvers"
)

bad=0
while IFS= read -r f; do
  dir=$(dirname "$f")
  [[ -n "${may_use[$dir]+x}" ]] || { echo "$f: folder $dir has no rule in tests/layering_test.sh" >&2; bad=1; continue; }
  while IFS= read -r inc; do
    target=$(dirname "$inc")
    ok=0
    for allowed in ${may_use[$dir]}; do [[ "$target" == "$allowed" ]] && ok=1; done
    if ((ok == 0)); then
      echo "$f includes $inc: $dir may use only ${may_use[$dir]}" >&2
      bad=1
    fi
  done < <(sed -n 's/^#include "\([a-z_]*\/[a-z_/0-9]*\.h\)".*/\1/p' "$f" | grep -v '^tests/' || true)
done < <(git ls-files 'solvers/*' 'models/*' 'runner/*' | grep -E '\.(h|cc)$')

# No file left at the top of runner/: every file lives in the folder of its subject.
if git ls-files 'runner/*' | grep -qE '^runner/[^/]+$'; then
  echo "files directly under runner/: $(git ls-files 'runner/*' | grep -E '^runner/[^/]+$' | tr '\n' ' ')" >&2
  bad=1
fi
((bad == 0)) && echo "layering: every include follows the rule"
exit $bad
