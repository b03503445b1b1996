#!/bin/sh
# Vendor the chat page's browser libraries: install the exact versions pinned in
# static/vendor/package.json (and package-lock.json) with npm, and copy their built files, with
# their licences, into static/vendor/. The copies are committed: `make run` needs no npm, and the
# page loads nothing from any other host. Run it again (`make vendor`) after changing a pin.
set -eu
cd "$(dirname "$0")/../static/vendor"
npm ci --no-audit --no-fund --ignore-scripts
NM=node_modules
HL=$NM/@highlightjs/cdn-assets
# The languages highlighted in code blocks; others are shown plain.
LANGUAGES="bash c cpp css diff go java javascript json markdown python rust shell sql typescript xml yaml"

rm -rf marked dompurify highlight
mkdir -p marked dompurify highlight/languages

# A copy without its sourceMappingURL line (the maps are not vendored).
copy() { grep -v '^//# sourceMappingURL=' "$1" > "$2"; }

copy $NM/marked/lib/marked.esm.js marked/marked.esm.js
cp $NM/marked/LICENSE marked/LICENSE
copy $NM/dompurify/dist/purify.es.mjs dompurify/purify.es.js
cp $NM/dompurify/LICENSE dompurify/LICENSE
copy $HL/es/core.min.js highlight/core.min.js
for lang in $LANGUAGES; do
  copy $HL/es/languages/$lang.min.js highlight/languages/$lang.min.js
done
cp $HL/styles/github.min.css highlight/github.min.css
cp $HL/styles/github-dark.min.css highlight/github-dark.min.css
cp $HL/LICENSE highlight/LICENSE
rm -rf $NM
echo "vendored: $(cd .. && find vendor -type f ! -name package.json ! -name package-lock.json | sort | tr '\n' ' ')"
