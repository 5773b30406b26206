#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (https://github.com/boxed/mutmut), not part of CI:
# it takes tens of minutes on 2 cores. Each module is mutated in a scratch copy of the checkout of
# its own and only the test files that cover it run (mutmut runs, per mutant, the tests that called
# the mutated function in-process; code reached only through a child process counts as "no tests").
#
#   scripts/mutation.sh [MODULE...]      # default: every module of MODULES below
#   MUTATION_CHILDREN=2 scripts/mutation.sh convert
#
# mutmut is installed into the checkout's .venv here (pinned, it is not a test dependency). The
# summary goes to $MUTATION_OUT/summary.md (default tests/output/mutation/), each module's survivors
# to $MUTATION_OUT/<module>.survivors with their diffs. Run it under `nice` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/.venv
out=${MUTATION_OUT:-$root/tests/output/mutation}
scratch=${MUTATION_SCRATCH:-${TMPDIR:-/tmp}/tigo-mutation}
children=${MUTATION_CHILDREN:-1}
mutmut_version=3.8.1

# module name -> "source file | test files that cover it"
declare -A MODULES=(
  [lineproto]="tigo_execd/lineproto.py | tests/test_lineproto.py tests/test_convert.py tests/test_threat_model.py"
  [exitcodes]="tigo_execd/exitcodes.py | tests/test_barcode.py"
  [barcode]="tigo_execd/identity/barcode.py | tests/test_barcode.py tests/test_registry.py"
  [registry]="tigo_execd/identity/registry.py | tests/test_registry_edges.py tests/test_registry.py tests/test_convert.py"
  [identity]="tigo_execd/identity/store.py | tests/test_identity_files.py tests/test_registry.py tests/test_threat_model.py"
  [convert]="tigo_execd/ingest/convert.py | tests/test_convert.py tests/test_registry.py tests/test_clock.py tests/test_threat_model.py"
  [fault_rules]="tigo_execd/analysis/fault_rules.py | tests/test_fault_rules.py"
  [homeassistant]="tigo_execd/health/homeassistant.py | tests/test_ha_entities.py tests/test_homeassistant.py"
  [heal]="tigo_execd/health/heal.py | tests/test_heal_inproc.py"
)
ORDER=(lineproto exitcodes barcode registry identity convert fault_rules homeassistant heal)

# Before the package's wings (issue 23) the modules sat flat in tigo_execd/: use whichever exists.
locate() {
  local path=$1
  [ -f "$path" ] && { echo "$path"; return; }
  local flat=tigo_execd/$(basename "$path")
  case $flat in
    tigo_execd/store.py) flat=tigo_execd/identity.py ;;
    tigo_execd/homeassistant.py) flat=tigo_execd/ha_discovery.py ;;
  esac
  [ -f "$flat" ] && echo "$flat"
}

"$venv/bin/python" -c "import mutmut" 2>/dev/null || "$venv/bin/pip" install -q "mutmut==$mutmut_version"
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no | grep -q . && echo "+uncommitted changes" || true)
mkdir -p "$out" "$scratch"
summary=$out/summary.md
{
  echo "mutmut $mutmut_version at $commit$dirty, $(date -u +%Y-%m-%dT%H:%MZ), $children child(ren)"
  echo
  echo "| module | mutants | killed | survived | no tests | timeout | other | seconds |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
} > "$summary"

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=("${ORDER[@]}")
for name in "${modules[@]}"; do
  spec=${MODULES[$name]:?unknown module $name (known: ${ORDER[*]})}
  source=$(locate "$(echo "${spec%%|*}" | xargs)") || { echo "E! no source file for $name" >&2; exit 66; }
  tests=()
  for t in ${spec#*|}; do [ -f "$t" ] && tests+=("$t"); done
  if [ ${#tests[@]} = 0 ]; then  # mutmut would run the whole suite
    echo "| $name | no test file of the mapping exists | | | | | | |" >> "$summary"
    continue
  fi
  work=$scratch/$name
  rm -rf "$work"
  mkdir -p "$work"
  # the checkout as it is (tracked and new files, nothing ignored)
  git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$work" 2>/dev/null || true
  {
    echo
    echo "[mutmut]"
    echo "source_paths = tigo_execd"
    echo "only_mutate = $source"
    echo "also_copy ="  # the tests read the shipped confs, docs and units too
    (cd "$work" && ls -A | grep -vx -e tigo_execd -e tests -e setup.cfg -e pyproject.toml) | sed 's/^/    /'
    echo "pytest_add_cli_args_test_selection ="
    printf '    %s\n' "${tests[@]}"
    printf 'pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n'
    # a test that reads convert.py's own source sees mutmut's rewrite of it, not the code
    printf '    --deselect\n    tests/test_convert.py::test_each_field_is_written_in_one_place_for_both_paths\n'
  } >> "$work/setup.cfg"
  echo "I! mutating $source with ${tests[*]}" >&2
  start=$(date +%s)
  (cd "$work" && PATH="$venv/bin:$PATH" "$venv/bin/mutmut" run --max-children "$children" > "$out/$name.log" 2>&1) || true
  seconds=$(( $(date +%s) - start ))
  (cd "$work" && "$venv/bin/mutmut" export-cicd-stats >/dev/null 2>&1) || true
  stats=$work/mutants/mutmut-cicd-stats.json
  if grep -q "could not find any test case for any mutant" "$out/$name.log"; then
    # mutmut mutates function bodies only: a module of constants (exitcodes.py) has no mutant
    echo "| $name | 0 (no function to mutate) | | | | | | $seconds |" >> "$summary"
    continue
  fi
  if [ ! -f "$stats" ] || grep -q "failed to collect stats" "$out/$name.log"; then
    echo "| $name | mutmut failed, see $name.log | | | | | | $seconds |" >> "$summary"
    continue
  fi
  "$venv/bin/python" - "$stats" "$name" "$seconds" >> "$summary" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
main = ("killed", "survived", "no_tests", "timeout")
other = sum(v for k, v in s.items() if k not in main + ("total",))
print(f"| {sys.argv[2]} | {s['total']} | {s['killed']} | {s['survived']} | {s['no_tests']} "
      f"| {s['timeout']} | {other} | {sys.argv[3]} |")
EOF
  (
    cd "$work"
    "$venv/bin/mutmut" results 2>/dev/null | while read -r key status; do
      [ "$status" = killed ] && continue
      echo "## ${key%:} ($status)"
      "$venv/bin/mutmut" show "${key%:}" </dev/null 2>/dev/null | sed -n '2,$p'
    done
  ) > "$out/$name.survivors"
done
cat "$summary"
