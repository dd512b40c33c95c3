#!/usr/bin/env bash
# fercore's two commands (see README.md):
#   ./reproduce.sh          set up, then run every notebook (quick profile) and regenerate figures/
#   ./reproduce.sh test     set up, then run every test: pytest unit tests + nbval over the notebooks
#   ./reproduce.sh site     set up, then build the tutorial site into site/ from what is committed (no training)
set -euo pipefail

usage() {
  cat <<'TXT'
usage: ./reproduce.sh [test] [options]

  (no command)          run every notebook in notebooks/ with papermill and regenerate figures/
  test                  run the unit tests and every notebook under nbval (smoke profile)
  site                  build the tutorial site into site/ (open site/index.html) from the committed pages,
                        without running a notebook; ./reproduce.sh builds it too, after the notebooks

options:
  --profile NAME        smoke | quick | real | paper     (default: quick on SynthFER, real with a real
                        --dataset; test always uses smoke)
  --dataset NAME        dataset reader                   (default: synthfer, the embedded data)
  --data-root PATH      folder of a real dataset in its official layout
  --label-source SRC    ferplus only: fer2013 = train on FER2013's own labels, one_vote = on one
                        annotator's vote per image (real label noise; the test split keeps the majority;
                        notebooks 04, 06 and 07 then inject no noise, 05 sweeps its rates on top)
  --device DEV          auto | cpu | cuda | cuda:N       (default: auto)
  --notebook NAME       run only notebooks whose file name starts with NAME (e.g. 00; 04,05,07 for several)
  --use-active-env      install into and use the active virtualenv/conda env instead of ./.venv
  -h, --help            show this help

Executed notebooks go to runs/<profile>/notebooks/ and, rendered as HTML, to docs/notebooks/ (quick),
docs/notebooks/<dataset>/ (real), docs/notebooks/paper/ (paper) or runs/smoke/html/ (smoke); training
runs to runs/<profile>/; figures and tables to figures/ (quick), figures/<dataset>/ (real),
figures/paper/ (paper) or runs/smoke/figures/ (smoke), each folder with a README.md listing every file
and the notebook that made it.
TXT
}

invocation="./reproduce.sh${*:+ $*}"  # as given, for the figure folder's README
mode=figures profile="" dataset=synthfer data_root="" device=auto only="" active=0 label_source=""
while [ $# -gt 0 ]; do
  case "$1" in
    test) mode=test ;;
    site) mode=site ;;
    --profile) profile="${2:?--profile needs a value}"; shift ;;
    --dataset) dataset="${2:?--dataset needs a value}"; shift ;;
    --data-root) data_root="${2:?--data-root needs a value}"; shift ;;
    --label-source) label_source="${2:?--label-source needs a value}"; shift ;;
    --device) device="${2:?--device needs a value}"; shift ;;
    --notebook) only="${2:?--notebook needs a value}"; shift ;;
    --use-active-env) active=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "reproduce.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "${profile:-quick}" in smoke|quick|real|paper) ;; *)
  echo "reproduce.sh: unknown profile '$profile'; expected smoke, quick, real or paper" >&2; exit 2 ;; esac
if [ "$mode" = test ] && [ -n "$profile$data_root" ]; then
  echo "reproduce.sh: 'test' always runs the smoke profile on SynthFER; drop --profile/--data-root" >&2; exit 2
fi
case "$label_source" in ""|ferplus|fer2013|one_vote) ;; *)
  echo "reproduce.sh: unknown --label-source '$label_source'; expected ferplus, fer2013 or one_vote" >&2; exit 2 ;; esac
if [ -n "$label_source" ] && [ "$dataset" != ferplus ]; then
  echo "reproduce.sh: --label-source goes with --dataset ferplus" >&2; exit 2
fi
if [ -n "$data_root" ] && [ ! -d "$data_root" ]; then
  echo "reproduce.sh: --data-root '$data_root' is not a folder" >&2; exit 2
fi
# real faces get the profile tuned for them (48 px, a stated subset, a stable curve), SynthFER the quick one
if [ -z "$profile" ]; then if [ "$dataset" = synthfer ]; then profile=quick; else profile=real; fi; fi
cd "$(dirname "$0")"

# --- setup: a virtualenv with fercore and its dev tools, reinstalled only when pyproject changes ---
if [ "$active" = 1 ]; then
  py=python3
  "$py" -c 'import os, sys; sys.exit(0 if sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") else 1)' || {
    echo "reproduce.sh: --use-active-env given, but no virtualenv or conda env is active" >&2; exit 2; }
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  py="$PWD/.venv/bin/python"
fi
stamp="$("$py" -c 'import sys; print(sys.prefix)')/.fercore-install-stamp"
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "reproduce.sh: installing fercore and its dependencies (a few minutes the first time)"
  start=$SECONDS
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
  echo "reproduce.sh: installed in $((SECONDS - start)) s"
fi
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1

build_site() {  # the README, docs/, the executed notebooks' pages and the figure indexes as one site
  "$py" -c "from fercore.site import build; r = build('site'); print(f\"reproduce.sh: site built in {r['seconds']} s: \"
            f\"{r['pages']} pages, {r['mib']} MiB in site/ (open site/index.html; it works offline)\")"
}
if [ "$mode" = site ]; then build_site; exit 0; fi

notebooks=()
IFS=, read -ra prefixes <<< "${only:-}"; [ ${#prefixes[@]} -gt 0 ] || prefixes=("")
for nb in notebooks/[0-9]*.ipynb; do
  for p in "${prefixes[@]}"; do
    case "$(basename "$nb")" in "$p"*) notebooks+=("$nb"); break ;; esac
  done
done
[ ${#notebooks[@]} -gt 0 ] || { echo "reproduce.sh: no notebook matches '$only'" >&2; exit 2; }

if [ "$mode" = test ]; then
  start=$SECONDS
  "$py" -m ruff check fercore tests benchmarks
  rm -rf runs/smoke  # notebooks reuse identical finished runs; tests must train from scratch
  # one pytest-xdist worker per core (at most 4), one thread each; a notebook's cells stay on one worker
  workers="$("$py" -c 'import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))')"
  OMP_NUM_THREADS=1 "$py" -m pytest tests "${notebooks[@]}" -n "$workers" --dist loadfile \
    --nbval-lax --nbval-current-env --nbval-sanitize-with .ci/sanitize.cfg --nbval-cell-timeout 900 -q
  echo "reproduce.sh: all tests passed in $((SECONDS - start)) s"
  exit 0
fi

outdir="runs/$profile/notebooks"
case "$profile" in
  quick) figdir=figures html=docs/notebooks ;;
  real) figdir="figures/$dataset" html="docs/notebooks/$dataset" ;;
  paper) figdir=figures/paper html=docs/notebooks/paper ;;
  *) figdir="runs/$profile/figures" html="runs/$profile/html" ;;
esac
mkdir -p "$outdir" "$html"
start=$SECONDS
for nb in "${notebooks[@]}"; do
  out="$outdir/$(basename "$nb")"
  echo "reproduce.sh: running $nb ($profile profile)"
  t=$SECONDS
  extra=()  # LABEL_SOURCE only for the notebooks that take it
  if [ -n "$label_source" ] && grep -q '"LABEL_SOURCE = ' "$nb"; then extra=(-r LABEL_SOURCE "$label_source"); fi
  # real label noise replaces the injected one where a notebook trains at one noise setting (04, 06, 07);
  # notebook 05's sweep injects its rates on top of it
  if [ "${#extra[@]}" -gt 0 ] && [ "$label_source" != ferplus ] && grep -q '"NOISE = \\"' "$nb"; then
    extra+=(-r NOISE none)
  fi
  if ! "$py" -m papermill "$nb" "$out" -k python3 --cwd notebooks --log-level WARNING \
      -p PROFILE "$profile" -p DATASET "$dataset" -r DATA_ROOT "$data_root" -p DEVICE "$device" "${extra[@]}"; then
    echo "reproduce.sh: $nb failed; the cell that failed and its error are above and in $out" >&2
    exit 1
  fi
  # the executed notebook as a page for people who read rather than run (figures embedded; the basic
  # template leaves out the 3,000 lines of CSS and JS every page would otherwise repeat)
  "$py" -m jupyter nbconvert --to html --template basic --log-level WARN --output-dir "$html" "$out"
  # the page names no folder of this machine: the checkout, the cache and the data root become names
  "$py" -c "import sys; from fercore.notebook import scrub_paths; scrub_paths(sys.argv[1], sys.argv[2])" \
    "$html/$(basename "$out" .ipynb).html" "$data_root"
  echo "reproduce.sh: $nb done in $((SECONDS - t)) s"
done
if [ "$dataset" = synthfer ]; then
  "$py" -c "from fercore.notebook import write_index; print(write_index('$figdir'))"
else  # a real dataset's folder says how it was made and which files (sha256) it read
  FIG="$figdir" CMD="${invocation//"$data_root"/DIR}" RUNS="runs/$profile/runs" DATASET="$dataset" "$py" -c "import os
from fercore.notebook import data_record, write_index
e = os.environ
print(write_index(e['FIG'], command=e['CMD'], data=data_record(e['RUNS'], e['DATASET'])))"
fi
if [ "$profile" = quick ] && [ "$dataset" = synthfer ]; then  # the README's findings are written from figures/
  "$py" -c "from fercore.notebook import refresh_findings; print('README findings refreshed:', refresh_findings('README.md', 'figures'))"
elif [ "$profile" = real ]; then  # and its section on real faces from figures/<dataset>/
  "$py" -c "from fercore.notebook import refresh_findings; print('README findings refreshed:', refresh_findings('README.md', 'figures', '$dataset'))"
fi
echo "reproduce.sh: ${#notebooks[@]} notebooks ran in $((SECONDS - start)) s; figures in $figdir/, pages in $html/"
case "$profile" in quick|real|paper) build_site ;; esac  # smoke pages are not the site's
