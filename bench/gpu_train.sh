#!/usr/bin/env bash
# One prepared GPU session: train the shipped models and the ablation runs side by
# side on one GPU, pick each shipped model by validation BLEU (beam 5), and hand
# back fp16 checkpoints and all logs.
#
# Run through the device tool from the repository root, with the Multi30k files in
# .devdata/multi30k/ and wheels for `datasets` in .whl/ (carried), e.g.
#   ONLY=general MINUTES=6 bash bench/gpu_train.sh (the general de-en and en-de models on
#       Tatoeba + Multi30k, each mixed 1:1 and with Multi30k taken 3 times; needs
#       .devdata/tatoeba/deu-eng/ and the joint tokenizer in .devdata/tokenizers/general/)
#   ONLY=continue MINUTES=3 bash bench/gpu_train.sh (a later session: the shipped general models,
#       checkpoints/{de-en,en-de}, trained on with --init-from at the learning rate 1e-3 and, to
#       anneal, 5e-4; the chosen ones are also scored on the test sets found in .devdata/)
#   MINUTES=6 bash bench/gpu_train.sh              (all runs: shipped models and ablations)
#   ONLY=en-de MINUTES=2.8 bash bench/gpu_train.sh  (the en-de runs alone)
#   ONLY=speed MINUTES=6 bash bench/gpu_train.sh    (the default de-en attention model alone,
#       --bf16, validating every 100 updates: tokens/s and time to BLEU on one GPU)
#   ONLY=news MINUTES=5 bash bench/gpu_train.sh     (issue 27: general models on Tatoeba + Multi30k +
#       the general corpora, from scratch, with the tokenizer (8,000 / 16,000 pieces), size (hidden
#       448 / 640) and mixture (dictionary and STS folders or not) ablations, beside the shipped
#       models trained on with the same mixture; chosen on the mean of newstest2012, Tatoeba dev and
#       Multi30k val at beam 5. `bash bench/gpu_prepare.sh` first makes .whl/ and .devdata/; then
#       the device tool: run(command="ONLY=news MINUTES=4.5 bash bench/gpu_train.sh",
#       carry=[".whl", ".devdata"], timeout_s=600). Tried end to end on the CPU with 300-pair
#       corpora: DEVICE=cpu SKIP_DEPS=1 MINUTES=0.3 VALIDATE_EVERY=3 with python3 from .venv)
# It writes to $OUT (default: gpu-out/): logs.tar.gz and the chosen models split in
# 15 MB parts (join with `cat NAME.part-* > model.safetensors`).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-gpu-out}
MINUTES=${MINUTES:-6}
DATA=${DATA:-.devdata/multi30k}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" runs logs

# -- dependencies: the GPU image has torch, sentencepiece, sacrebleu, typer, safetensors; not datasets
[ -n "${SKIP_DEPS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .whl/datasets-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl
export PYTHONPATH=/tmp/site:$PWD
if [ -z "${SKIP_DEPS:-}" ] && ! python3 -c "import datasets" 2>logs/datasets-import.txt; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site --upgrade .whl/pyarrow-*.whl .whl/fsspec-*.whl
  python3 -c "import datasets" || { echo "datasets does not import"; exit 1; }
fi
MT="python3 -m mt"
# Logs reach $OUT every 15 s, so that a run cut short still reports what it did.
(while sleep 15; do tar czf "$OUT/logs.tar.gz" logs runs/*/log.jsonl 2>/dev/null; done) &
LOGGER=$!
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, datasets; print('torch', torch.__version__, 'datasets', datasets.__version__, 'cuda', torch.cuda.is_available())"; nproc; } | tee logs/machine.txt

# -- tokenizers (joint unigram, 8000 pieces); the general models bring theirs
case "${ONLY:-}" in en-de|general|continue|news) ;; *) $MT train-tokenizer --train $DATA/train --src de --tgt en --vocab-size ${VOCAB:-8000} --output data/tokenizers/de-en 2>&1 | tee logs/tokenizer-de-en.txt;; esac
case "${ONLY:-}" in speed|general|continue|news) ;; *) $MT train-tokenizer --train $DATA/train --src en --tgt de --vocab-size ${VOCAB:-8000} --output data/tokenizers/en-de 2>&1 | tee logs/tokenizer-en-de.txt;; esac

COMMON="--train $DATA/train --valid $DATA/val --device $DEVICE --epochs 60 --patience 8 --max-minutes $MINUTES --share-embeddings"
ATT="--attention luong --bidirectional --hidden-size 448"
run() {  # name, arguments...
  local name=$1; shift
  echo "mt train $* --output runs/$name" > logs/$name.command
  $MT train "$@" --output runs/$name > logs/$name.txt 2>&1 &
  RUNS="$RUNS $!"
}
RUNS=""
TATOEBA=${TATOEBA:-.devdata/tatoeba/deu-eng}
GENERAL="--valid $TATOEBA/dev --valid $DATA/val --device $DEVICE --epochs 60 --patience 8 --max-minutes $MINUTES
  --share-embeddings --bidirectional --hidden-size 448 --batch-tokens 12000 --keep-checkpoints 5"
if [ "${ONLY:-}" = general ]; then  # everyday sentences + captions, both directions, two mixes each
  for pair in "de en bahdanau" "en de luong"; do
    set -- $pair
    run $1-$2-general     --train $TATOEBA/train --train $DATA/train   --src $1 --tgt $2 --attention $3 \
      --tokenizer .devdata/tokenizers/general $GENERAL
    run $1-$2-general-m3  --train $TATOEBA/train --train $DATA/train:3 --src $1 --tgt $2 --attention $3 \
      --tokenizer .devdata/tokenizers/general $GENERAL
  done
elif [ "${ONLY:-}" = continue ]; then  # the shipped general models, a fresh optimizer, the same mix
  for pair in "de en" "en de"; do
    set -- $pair
    for lr in 1e-3 5e-4; do
      run $1-$2-continued-lr$lr --train $TATOEBA/train --train $DATA/train:3 --src $1 --tgt $2 \
        --init-from checkpoints/$1-$2/model.safetensors --warmup-steps 50 --lr $lr $GENERAL
    done
  done
elif [ "${ONLY:-}" = news ]; then  # issue 27: six runs from scratch and two continued, side by side
  MIX="--train $TATOEBA/train --train $DATA/train --train .devdata/general/news/train:2
    --train .devdata/general/wiki/train:2 --train .devdata/general/web/train:2
    --train .devdata/general/europarl/train --train .devdata/general/chat/train"
  SMALL="--train .devdata/general/dictionary-sentences/train --train .devdata/general/sts/train"
  NEWS="--valid .devdata/news/newstest2012 $GENERAL --validate-every ${VALIDATE_EVERY:-1000}"
  run de-en-news-8k        $MIX $SMALL --src de --tgt en --attention bahdanau --tokenizer .devdata/tokenizers/news-8000 $NEWS
  run de-en-news-16k       $MIX $SMALL --src de --tgt en --attention bahdanau --tokenizer .devdata/tokenizers/news-16000 $NEWS
  run de-en-news-16k-h640  $MIX $SMALL --src de --tgt en --attention bahdanau --tokenizer .devdata/tokenizers/news-16000 $NEWS --hidden-size 640
  run de-en-news-16k-nosmall $MIX    --src de --tgt en --attention bahdanau --tokenizer .devdata/tokenizers/news-16000 $NEWS
  run en-de-news-16k       $MIX $SMALL --src en --tgt de --attention luong --tokenizer .devdata/tokenizers/news-16000 $NEWS
  run en-de-news-16k-h640  $MIX $SMALL --src en --tgt de --attention luong --tokenizer .devdata/tokenizers/news-16000 $NEWS --hidden-size 640
  for pair in "de en" "en de"; do  # the shipped models (with their own tokenizers), trained on with the mixture
    set -- $pair
    run $1-$2-news-continued $MIX $SMALL --src $1 --tgt $2 --init-from checkpoints/$1-$2/model.safetensors \
      --warmup-steps 100 --lr 5e-4 $NEWS
  done
elif [ "${ONLY:-}" = en-de ]; then  # a second, shorter session for en-de alone
  run en-de-luong-drop5  $COMMON --src en --tgt de $ATT --dropout 0.5 --keep-checkpoints 5
  run en-de-luong-drop4  $COMMON --src en --tgt de $ATT --dropout 0.4 --keep-checkpoints 5
elif [ "${ONLY:-}" = speed ]; then
  run de-en-bahdanau-bf16 $COMMON --src de --tgt en --attention bahdanau --bidirectional --hidden-size 448 --bf16 --validate-every 100
else
  run de-en-luong        $COMMON --src de --tgt en $ATT --keep-checkpoints 5
  run de-en-bahdanau     $COMMON --src de --tgt en --attention bahdanau --bidirectional --hidden-size 448 --keep-checkpoints 5
  run de-en-luong-drop5  $COMMON --src de --tgt en $ATT --dropout 0.5 --keep-checkpoints 5
  run de-en-luong-nols   $COMMON --src de --tgt en $ATT --label-smoothing 0
  run de-en-luong-constlr $COMMON --src de --tgt en $ATT --lr-patience 1000
  run en-de-luong        $COMMON --src en --tgt de $ATT --keep-checkpoints 5
  run en-de-luong-drop5  $COMMON --src en --tgt de $ATT --dropout 0.5 --keep-checkpoints 5
  run de-en-base         $COMMON --src de --tgt en --attention none --keep-checkpoints 5
  run de-en-base-bidir   $COMMON --src de --tgt en --attention none --bidirectional --keep-checkpoints 5
  run de-en-base-noreverse $COMMON --src de --tgt en --attention none --no-reverse-source
fi
wait $RUNS
nvidia-smi --query-gpu=memory.used --format=csv >> logs/machine.txt

# -- for each candidate: best checkpoint vs average of the last 5, scored on val at beam 5
score() {  # checkpoint, src, tgt[, prefix of the validation set] -> BLEU
  local set=${4:-$DATA/val}
  $MT evaluate --model "$1" --src $set.$2.gz --ref $set.$3.gz --beam 5 --json --device $DEVICE 2>/dev/null \
    | python3 -c "import json,sys; print(json.load(sys.stdin)['bleu'])"
}
# -- the general models: the mean of val BLEU on Tatoeba dev and Multi30k val, beam 5
score_general() {  # checkpoint, src, tgt -> mean BLEU of the two validation sets
  local a b
  a=$(score "$1" $2 $3 $TATOEBA/dev) b=$(score "$1" $2 $3)
  python3 -c "print(round(($a + $b) / 2, 2), $a, $b)"
}
# -- issue 27's models: the mean with newstest2012 beside them
score_news() {  # checkpoint, src, tgt -> mean BLEU of newstest2012, Tatoeba dev and Multi30k val
  local n a b
  n=$(score "$1" $2 $3 .devdata/news/newstest2012) a=$(score "$1" $2 $3 $TATOEBA/dev) b=$(score "$1" $2 $3)
  python3 -c "print(round(($n + $a + $b) / 3, 2), $n, $a, $b)"
}
pick() {  # shipped name, src, tgt, candidate runs...
  local name=$1 src=$2 tgt=$3; shift 3
  local best_score=-1 best_path="" candidates="" scoring=""
  for run in "$@"; do
    $MT average runs/$run/step-*.safetensors --output runs/$run/averaged.safetensors 2>/dev/null
    candidates="$candidates runs/$run/best.safetensors runs/$run/averaged.safetensors"
  done
  for candidate in $candidates; do  # scored side by side: the GPU has room for all of them
    $SCORE $candidate $src $tgt > $candidate.score & scoring="$scoring $!"
  done
  wait $scoring
  for candidate in $candidates; do
    local s; s=$(cut -d" " -f1 < $candidate.score)
    echo "$name $candidate val-beam5 $(cat $candidate.score)" | tee -a logs/selection.txt
    if python3 -c "import sys; sys.exit(0 if float('${s:--1}') > float('$best_score') else 1)"; then
      best_score=$s; best_path=$candidate
    fi
  done
  echo "$name chosen $best_path $best_score" | tee -a logs/selection.txt
  $MT average "$best_path" --output runs/$name.safetensors --fp16
  echo "fp16 $($SCORE runs/$name.safetensors $src $tgt)" | sed "s/^/$name /" | tee -a logs/selection.txt
  split -b 15000000 runs/$name.safetensors "$OUT/$name.part-"
}
SCORE=score
if [ "${ONLY:-}" = speed ]; then
  :  # nothing to ship: the log is the result
elif [ "${ONLY:-}" = general ]; then
  SCORE=score_general
  pick de-en de en de-en-general de-en-general-m3 & PICKS="$!"
  pick en-de en de en-de-general en-de-general-m3 & PICKS="$PICKS $!"
  wait $PICKS
elif [ "${ONLY:-}" = continue ]; then
  SCORE=score_general
  pick de-en de en de-en-continued-lr1e-3 de-en-continued-lr5e-4 & PICKS="$!"
  pick en-de en de en-de-continued-lr1e-3 en-de-continued-lr5e-4 & PICKS="$PICKS $!"
  wait $PICKS
  # only scored, never chosen by: the test sets (beam 5), the shipped models beside the new ones
  TESTS=""
  for test in .devdata/tatoeba-test/test .devdata/multi30k/test_2016_flickr .devdata/news/newstest2013; do
    [ -e $test.de.gz ] || continue
    for model in de-en en-de; do
      set -- ${model%-*} ${model#*-}
      for candidate in runs/$model.safetensors checkpoints/$model/model.safetensors; do
        echo "test $test $candidate $(score $candidate $1 $2 $test)" >> logs/tests.txt & TESTS="$TESTS $!"
      done
    done
  done
  wait $TESTS
  cat logs/tests.txt
elif [ "${ONLY:-}" = news ]; then
  SCORE=score_news
  pick de-en de en de-en-news-8k de-en-news-16k de-en-news-16k-h640 de-en-news-16k-nosmall de-en-news-continued & PICKS="$!"
  pick en-de en de en-de-news-16k en-de-news-16k-h640 en-de-news-continued & PICKS="$PICKS $!"
  wait $PICKS
elif [ "${ONLY:-}" = en-de ]; then
  pick en-de en de en-de-luong-drop5 en-de-luong-drop4
else
  pick de-en de en de-en-luong de-en-bahdanau de-en-luong-drop5 & PICKS="$!"
  pick en-de en de en-de-luong en-de-luong-drop5 & PICKS="$PICKS $!"
  pick de-en-base de en de-en-base de-en-base-bidir & PICKS="$PICKS $!"
  wait $PICKS
fi
for run in runs/*/; do cp "$run/log.jsonl" "logs/$(basename "$run").jsonl" 2>/dev/null; done
kill $LOGGER 2>/dev/null
tar czf "$OUT/logs.tar.gz" logs
ls -la "$OUT"
