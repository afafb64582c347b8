"""Loads a TwoBP BERT checkpoint with Hugging Face transformers' BertForPreTraining and computes
the loss terms `twobp eval` reports on the same held-out batches, for comparing the two.

    python3 scripts/check-bert-transformers.py STEP_FOLDER DATA SEQ_LEN BATCH_SIZE BATCHES [TWOBP_EVAL_JSON]

Needs torch and transformers (not needed by the build or the tests), in the environment
scripts/setup-reference-venv.sh makes. The held-out sentence pairs are rebuilt here from DATA
exactly as Sources/Data/SentencePairCorpus.swift builds them (SplitMix64 draws, line segments,
15% masking with 80/10/10), an independent copy of the data pipeline, so both sides evaluate the
same batches: `twobp eval --seq-len SEQ_LEN --batch-size BATCH_SIZE --max-windows BATCHES`.
Prints the mean over the batches of the masked-LM loss (mean over predicted positions), the
next-sentence loss and accuracy, and their sum, as JSON. Given the JSON `twobp eval --json` wrote,
it also prints the relative difference of every term and exits non-zero if one is 1e-5 or more.
"""
import json
import sys

import torch
from transformers import BertForPreTraining

MASK64 = (1 << 64) - 1
PAD, CLS, SEP, MASK = 256, 257, 258, 259
IGNORE = -100


class SplitMix64:
    """Sources/Tensor/SeededGenerator.swift."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 11) * 2.0**-53

    def below(self, bound):
        return (self.next() * bound) >> 64


def mix(value):
    return SplitMix64(value).next()


def held_out_batches(raw, length, batch_size, count, validation_fraction=0.05, stride=4):
    """SentencePairCorpus.validationPairs: sample i's A starts at held-out line stride · i."""
    lines, start = [], 0
    for index, byte in enumerate(raw):
        if byte == 0x0A:
            lines.append((start, index + 1))
            start = index + 1
    if start < len(raw):
        lines.append((start, len(raw)))
    held_out = int(len(lines) * validation_fraction)
    part = range(len(lines) - held_out, len(lines))

    def segment(first, capacity):
        lo, hi = lines[first]
        if not hi - lo < capacity:
            return raw[lo:lo + capacity], first + 1
        end = first + 1
        while end < part.stop and lines[end][1] - lo <= capacity:
            end += 1
        return raw[lo:lines[end - 1][1]], end

    def sample(first, generator):
        budget = length - 3
        a, after_a = segment(first, max(1, budget // 2))
        is_next = generator.next() & 1 == 0
        if after_a >= part.stop:
            is_next = False
        second = after_a
        if not is_next:
            second = part.start + generator.below(len(part))
            if second == after_a:
                second = part.start + (second - part.start + 1) % len(part)
        b, _ = segment(second, budget - len(a))
        tokens = [CLS] + list(a) + [SEP] + list(b) + [SEP]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        slots = list(range(1, 1 + len(a))) + list(range(len(a) + 2, len(a) + 2 + len(b)))
        labels = [IGNORE] * length
        selected = [slot for slot in slots if generator.uniform() < 0.15]
        if not selected and slots:
            selected = [slots[generator.below(len(slots))]]
        for slot in selected:
            labels[slot] = tokens[slot]
            choice = generator.below(10)
            if choice < 8:
                tokens[slot] = MASK
            elif choice == 8:
                tokens[slot] = generator.below(256)
        used = len(tokens)
        return (tokens + [PAD] * (length - used), types + [0] * (length - used), [1] * used + [0] * (length - used), labels,
                0 if is_next else 1)

    available = (len(part) // stride) // batch_size
    if available < 1:
        sys.exit(f"the held-out part holds fewer than {batch_size} sentence pairs")
    for b in range(min(count, available)):
        samples = []
        for i in range(batch_size):
            index = b * batch_size + i
            samples.append(sample(part.start + index * stride, SplitMix64(mix(0x4E1D0B7 ^ index))))
        yield [torch.tensor([s[k] for s in samples], dtype=torch.long) for k in range(5)]


folder, data, length, batch_size, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
model, info = BertForPreTraining.from_pretrained(folder, torch_dtype=torch.float32, output_loading_info=True)
model.eval()
untied_missing = [key for key in info["missing_keys"] if key not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")]
if untied_missing or info["unexpected_keys"]:
    sys.exit(f"checkpoint does not match BertForPreTraining: missing {untied_missing}, unexpected {info['unexpected_keys']}")
if model.cls.predictions.decoder.weight.data_ptr() != model.bert.embeddings.word_embeddings.weight.data_ptr():
    sys.exit("the decoder does not share the word embeddings")

raw = open(data, "rb").read()
sums = {"loss": 0.0, "mlm_loss": 0.0, "nsp_loss": 0.0, "nsp_accuracy": 0.0}
evaluated = 0
with torch.no_grad():
    for tokens, types, mask, labels, next_labels in held_out_batches(raw, length, batch_size, batches):
        out = model(input_ids=tokens, token_type_ids=types, attention_mask=mask, labels=labels, next_sentence_label=next_labels)
        vocabulary = out.prediction_logits.shape[-1]
        mlm = torch.nn.functional.cross_entropy(out.prediction_logits.reshape(-1, vocabulary).double(), labels.reshape(-1),
                                                ignore_index=IGNORE).item()
        nsp = torch.nn.functional.cross_entropy(out.seq_relationship_logits.double(), next_labels).item()
        accuracy = (out.seq_relationship_logits.argmax(-1) == next_labels).double().mean().item()
        if abs(out.loss.item() - (mlm + nsp)) > 1e-5 * (mlm + nsp):
            sys.exit(f"BertForPreTraining's own loss {out.loss.item()} differs from mlm + nsp {mlm + nsp}")
        for name, value in (("loss", mlm + nsp), ("mlm_loss", mlm), ("nsp_loss", nsp), ("nsp_accuracy", accuracy)):
            sums[name] += value
        evaluated += 1
result = {name: value / evaluated for name, value in sums.items()}
result.update(batches=evaluated, samples=evaluated * batch_size, transformers=__import__("transformers").__version__,
              torch=torch.__version__)
print(json.dumps(result))
if len(sys.argv) > 6:
    twobp = json.load(open(sys.argv[6]))
    worst = 0.0
    for name in ("loss", "mlm_loss", "nsp_loss", "nsp_accuracy"):
        difference = abs(twobp[name] - result[name]) / max(abs(result[name]), 1e-12)
        worst = max(worst, difference)
        print(f"{name}: twobp {twobp[name]:.9f}, transformers {result[name]:.9f}, relative difference {difference:.3e}")
    if worst >= 1e-5:
        sys.exit(f"largest relative difference {worst:.3e} is not below 1e-5")
    print(f"OK: largest relative difference {worst:.3e} < 1e-5")
