#!/usr/bin/env bash
# Prepares what `bench/gpu_train.sh` needs on the GPU machine, which cannot reach a package
# registry: wheels for `datasets` (the GPU image lacks it) in .whl/, and the corpora and
# tokenizers in .devdata/. Run on the CPU machine from the repository root after `make data`;
# then carry both to the device: run(command="ONLY=news bash bench/gpu_train.sh", carry=[".whl", ".devdata"]).
#   bash bench/gpu_prepare.sh
# Both folders are git-ignored; the script only adds what is missing, so it can be re-run.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
MT="$PYTHON -m mt"

# -- wheels: the versions this machine's .venv runs, for the image's Python 3.12, without their
#    dependencies (the image has pyarrow, fsspec and the rest; /work/.library/device/KINDS.md)
mkdir -p .whl
for package in datasets dill multiprocess; do
  version=$($PYTHON -c "import importlib.metadata as m; print(m.version('$package'))")
  ls .whl/"$package"-"$version"-*.whl >/dev/null 2>&1 \
    || $PYTHON -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --dest .whl "$package==$version"
done

# -- corpora: the training and validation files of issue 27's mixture (no test set is needed to choose)
copy() {  # data path without the language suffix
  mkdir -p ".devdata/$(dirname "$1")"
  for language in de en; do cp -L "data/$1.$language.gz" ".devdata/$1.$language.gz"; done
}
for corpus in multi30k/train multi30k/val tatoeba/deu-eng/train tatoeba/deu-eng/dev news/newstest2012; do copy $corpus; done
for folder in news wiki web europarl chat dictionary-sentences sts; do copy general/$folder/train; done

# -- joint tokenizers of 8,000 and 16,000 pieces on the mixture (a few minutes each on 2 cores)
MIX=(--train data/tatoeba/deu-eng/train --train data/multi30k/train
  --train data/general/news/train:2 --train data/general/wiki/train:2 --train data/general/web/train:2
  --train data/general/europarl/train --train data/general/chat/train
  --train data/general/dictionary-sentences/train --train data/general/sts/train)
for size in 8000 16000; do
  [ -e .devdata/tokenizers/news-$size/source.model ] \
    || $MT train-tokenizer "${MIX[@]}" --src de --tgt en --vocab-size $size --output .devdata/tokenizers/news-$size
done
du -sh .whl .devdata
