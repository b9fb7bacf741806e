#!/bin/sh
# Run a Captum checkout's own tests against deltalift's classes (scripts/captum_conftest.py swaps
# them in), one line of counts per test file.  Usage, from the repository root with the venv's
# tools on PATH:   sh scripts/peer_suites.sh PATH/TO/CAPTUM [test files relative to tests/attr]
# Without a checkout it says so and exits 0 (CI has none: the check is for developers).
set -eu
checkout="${1:-}"
if [ -z "$checkout" ] || [ ! -e "$checkout" ]; then
    echo "peer_suites: no Captum checkout given (usage: sh scripts/peer_suites.sh PATH/TO/CAPTUM); skipped"
    exit 0
fi
shift
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -d "$checkout/tests/attr" ]; then
    cp -r "$checkout/tests" "$work/tests"
else  # a bare git directory
    git --git-dir="$checkout" archive HEAD tests | tar -x -C "$work"
fi
cp "$here/captum_conftest.py" "$work/tests/attr/conftest.py"
if [ "$#" -eq 0 ]; then
    set -- test_saliency.py test_input_x_gradient.py test_integrated_gradients_basic.py \
        test_integrated_gradients_classification.py test_guided_backprop.py test_deconvolution.py \
        test_guided_grad_cam.py layer/test_grad_cam.py layer/test_layer_deeplift.py \
        neuron/test_neuron_deeplift.py test_occlusion.py layer/test_internal_influence.py \
        test_deeplift_basic.py test_deeplift_classification.py test_gradient_shap.py \
        layer/test_layer_integrated_gradients.py layer/test_layer_activation.py \
        layer/test_layer_gradient_x_activation.py
fi
cd "$work/tests/attr"
files=""
for f in "$@"; do [ -f "$f" ] && files="$files $f"; done
# shellcheck disable=SC2086
python -m pytest -q -p no:cacheprovider -p no:xdist --tb=line -rN --junit-xml="$work/report.xml" $files || true
python - "$work/report.xml" <<'PY'
import collections, sys, xml.etree.ElementTree as ET
counts = collections.defaultdict(lambda: [0, 0, 0])
failures = collections.defaultdict(list)
for case in ET.parse(sys.argv[1]).iter("testcase"):
    name = case.get("classname", "").rsplit(".", 1)[0].replace(".", "/") + ".py"
    if case.find("skipped") is not None:
        counts[name][2] += 1
    elif case.find("failure") is not None or case.find("error") is not None:
        counts[name][1] += 1
        failures[name].append(case.get("name"))
    else:
        counts[name][0] += 1
print(f"{'file':60s} passed failed skipped")
for name in sorted(counts):
    p, f, s = counts[name]
    print(f"{name:60s} {p:6d} {f:6d} {s:7d}")
total = [sum(c[i] for c in counts.values()) for i in range(3)]
print(f"{'total':60s} {total[0]:6d} {total[1]:6d} {total[2]:7d}")
for name in sorted(failures):
    print(f"failed in {name}: {', '.join(failures[name])}")
PY
