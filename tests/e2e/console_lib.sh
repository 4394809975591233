#!/usr/bin/env bash
# Shared steps of the console browser suites: the pinned playwright-core (installed once outside
# the checkout) next to Debian's chromium, and a server with one real agent (node-a) whose admin
# kubeconfig addresses the server as nodes do. Source it after lib.sh (and nodes_lib.sh for the
# agent step); it needs WORK, and for the agent step NODES, URL and KUBECONFIG.

PLAYWRIGHT_VERSION=1.65.2
NODE_CACHE=${MINI_TEST_NODE_CACHE:-/var/cache/mini-test}

# console_tools: chromium present and playwright-core at the pinned version in NODE_CACHE.
console_tools() {
  if [ ! -x /usr/bin/chromium ]; then
    not_ok "chromium_installed" "/usr/bin/chromium is missing (apt-get install chromium)"
    return 1
  fi
  if [ ! -f "$NODE_CACHE/node_modules/playwright-core/package.json" ] ||
    ! grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$NODE_CACHE/node_modules/playwright-core/package.json"; then
    mkdir -p "$NODE_CACHE"
    npm install --prefix "$NODE_CACHE" --no-save --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null
  fi
  ok "playwright_core_available"
}

# console_start_with_agent: the network, `mini server --disable-agent`, node-a Ready, the default
# ServiceAccount, and KUBECONFIG rewritten to address the server at $URL (so `mini images push`
# names images $REG/NS/app:tag in the repository NS/app).
console_start_with_agent() {
  setup_network "${NODES[@]}"
  start_node_server "$WORK/server" --disable-agent || return 1
  start_agent node-a "$(node_ip 1)" "$WORK/node-a"
  console_wait_agent_ready || return 1
  sed "s#server: .*#server: $URL#" "$KUBECONFIG" >"$WORK/admin.kubeconfig"
  export KUBECONFIG=$WORK/admin.kubeconfig
}

# console_wait_agent_ready: node-a Ready and the default ServiceAccount made.
console_wait_agent_ready() {
  wait_for "agent_node_ready" 120 bash -c \
    "[ \$(nsenter --net=$(ns_path "$SERVER_NS") kubectl --request-timeout=10s get nodes --no-headers 2>/dev/null | grep -c ' Ready ') -eq 1 ]" || return 1
  wait_for "default_serviceaccount_created" 30 k get sa default -n default || return 1
}
