"""Loads a TwoBP Mamba checkpoint with Hugging Face transformers' MambaForCausalLM and
computes the loss `twobp eval` reports, for comparing the two.

    python3 scripts/check-mamba-transformers.py STEP_FOLDER DATA SEQ_LEN WINDOWS

Needs torch and transformers (not needed by the build or the tests), in the environment
scripts/setup-reference-venv.sh makes (it prints the interpreter to run this with). Without the
CUDA (torch+cpu), transformers runs MambaMixer's selective scan as its sequential torch loop (the
recurrent fallback of mamba_selective_scan; the CUDA kernels of mamba-ssm cannot load), the
computation TwoBP's mixer follows; the script says which device ran. Prints the mean cross-entropy in nats
per byte over the first WINDOWS windows of SEQ_LEN + 1 bytes of DATA, as
`twobp eval --seq-len SEQ_LEN --max-windows WINDOWS` does, and whether lm_head shares the
embedding's storage (a checkpoint of tie_word_embeddings = true holds only
backbone.embeddings.weight; transformers ties lm_head to it on load).
"""
import json
import sys

import torch
from transformers import MambaForCausalLM

folder, data, length, windows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = MambaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
raw = open(data, "rb").read()[: windows * (length + 1)]
tokens = torch.tensor(list(raw), dtype=torch.long).view(windows, length + 1)
total = 0.0
with torch.no_grad():
    for batch in tokens.split(8):
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), batch[:, 1:].reshape(-1), reduction="sum")
        total += loss.item()
tied = model.lm_head.weight.data_ptr() == model.backbone.embeddings.weight.data_ptr()
if tied != model.config.tie_word_embeddings:
    sys.exit(f"lm_head {'shares' if tied else 'does not share'} the embedding, but tie_word_embeddings is {model.config.tie_word_embeddings}")
print(json.dumps({"loss": total / (windows * length), "windows": windows, "sequence_length": length, "tied": tied,
                  "device": "cuda" if torch.cuda.is_available() else "cpu (sequential scan)", "transformers": __import__("transformers").__version__,
                  "torch": torch.__version__}))
