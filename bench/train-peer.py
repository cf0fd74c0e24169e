#!/usr/bin/env python3
"""Training-speed peer for `captioner train`: the same merge captioning model in PyTorch on the CPU.

image 4096 -> Dropout -> Dense(256, relu); tokens -> Embedding(vocab, 256, padding_idx 0) ->
Dropout -> LSTM(256) over the whole caption (teacher forcing, length 34); add-merge ->
Dense(256, relu) -> Dense(vocab) -> masked cross-entropy; Adam (clip norm 5); batch 64.
Synthetic data: caption lengths (real target tokens) uniform in [min-len, max-len].
With --model attention: the Show, Attend and Tell decoder of bench/parity-peer.py (the PyTorch reference
of src/model/decoders/attention.ts; embed = units) over a grid of --positions x --channels features,
dropout 0.5, attention regulariser lambda 1, packed (the time loop runs to the longest caption, the output
layer on real tokens only, as ours).
With --model transformer: the pre-LN Transformer decoder of bench/parity-peer.py (build_transformer, the
PyTorch reference of src/model/decoders/transformer.ts; model size = units) with --layers, --heads and
--ffn-dim over the same grid, dropout 0.1, sinusoidal positions, learned image positions, tied embeddings,
packed likewise (the output layer on real tokens only).
Prints one JSON object on stdout: tokensPerSec counts real (unpadded) target tokens per second
over --steps steps after --warmup steps. Run with /usr/bin/python3 (Debian python3-torch).
"""
import argparse
import importlib.util
import json
import os
import sys
import time
import types


def parity_peer():
    """bench/parity-peer.py as a module (its name has a hyphen): the one PyTorch attention reference."""
    spec = importlib.util.spec_from_file_location("parity_peer", os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity-peer.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--length", type=int, default=34)
    p.add_argument("--feature-dim", type=int, default=4096)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OpenBLAS threads, reported; the caller sets OPENBLAS_NUM_THREADS before start-up")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", choices=["merge", "attention", "transformer"], default="merge")
    p.add_argument("--positions", type=int, default=196, help="attention: grid positions P (196 = 14x14 block5_conv3)")
    p.add_argument("--channels", type=int, default=512, help="attention: channels C per position")
    p.add_argument("--attention-dim", type=int, default=None, help="attention: default units")
    p.add_argument("--layers", type=int, default=3, help="transformer: decoder blocks")
    p.add_argument("--heads", type=int, default=8, help="transformer: attention heads")
    p.add_argument("--ffn-dim", type=int, default=None, help="transformer: feed-forward width (default 4 x units)")
    p.add_argument("--packed", action="store_true",
                   help="run the LSTM only up to the batch's longest caption and the output layer only on real tokens")
    a = p.parse_args()

    try:
        import torch
        from torch import nn
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"PyTorch not available: {e}"}))
        return 2

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    V, L, B, U, F = a.vocab, a.length, a.batch, a.units, a.feature_dim

    class Merge(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.img_drop = nn.Dropout(0.5)
            self.img = nn.Linear(F, U)
            self.emb = nn.Embedding(V, U, padding_idx=0)
            self.emb_drop = nn.Dropout(0.5)
            self.lstm = nn.LSTM(U, U, batch_first=True)
            self.hidden = nn.Linear(U, U)
            self.out = nn.Linear(U, V)

        def forward(self, feats, tokens, mask=None):  # feats [B, F], tokens [B, L], mask [B, L] bool
            i = torch.relu(self.img(self.img_drop(feats)))  # [B, U]
            s, _ = self.lstm(self.emb_drop(self.emb(tokens)))  # [B, L, U]
            m = s + i[:, None, :]  # [B, L, U]
            if mask is not None:
                m = m[mask]  # [real, U]
            h = torch.relu(self.hidden(m))
            return self.out(h)  # [B, L, V] or [real, V]

    if a.model == "attention":
        import numpy as np

        F = a.positions * a.channels
        ns = types.SimpleNamespace(embed=U, units=U, attention_dim=a.attention_dim or U, alpha_reg=1.0, dropout=0.5, init_scheme="keras")
        model = parity_peer().build_attention(torch, ns, V, [a.positions, a.channels],
                                              np.zeros(a.channels, np.float32), np.ones(a.channels, np.float32))
        a.packed = True  # it computes the output layer on real tokens only
    elif a.model == "transformer":
        import numpy as np

        F = a.positions * a.channels
        ns = types.SimpleNamespace(model_dim=U, heads=a.heads, ffn_dim=a.ffn_dim or 4 * U, layers=a.layers, dropout=0.1,
                                   position_encoding="sinusoidal", image_positions="learned", tie_embeddings=True, init_scheme="keras")
        model = parity_peer().build_transformer(torch, ns, V, [a.positions, a.channels],
                                                np.zeros(a.channels, np.float32), np.ones(a.channels, np.float32))
        a.packed = True  # it computes LN_f and the output layer on real tokens only
    else:
        model = Merge()
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss(ignore_index=0)

    g = torch.Generator().manual_seed(a.seed)

    def batch():
        lens = torch.randint(a.min_len, a.max_len + 1, (B,), generator=g)  # real target tokens
        words = torch.randint(1, V, (B, L + 1), generator=g)
        pos = torch.arange(L + 1)[None, :]
        seq = torch.where(pos <= lens[:, None], words, torch.zeros_like(words))  # start + lens tokens
        feats = torch.randn(B, F, generator=g)
        return feats, seq[:, :L], seq[:, 1:], int(lens.sum())

    batches = [batch() for _ in range(min(8, a.steps + a.warmup))]
    model.train()
    losses = []

    def step(k: int):
        feats, inp, tgt, n = batches[k % len(batches)]
        opt.zero_grad(set_to_none=True)
        if a.model in ("attention", "transformer"):
            width = int((tgt != 0).sum(1).max())
            inp, tgt = inp[:, :width], tgt[:, :width]
            mask = tgt != 0
            logits, reg = model(feats, inp, mask)
            loss = loss_fn(logits, tgt[mask]) + (reg if reg is not None else 0)
        elif a.packed:
            width = int((tgt != 0).sum(1).max())
            inp, tgt = inp[:, :width], tgt[:, :width]
            mask = tgt != 0
            loss = loss_fn(model(feats, inp, mask), tgt[mask])
        else:
            logits = model(feats, inp)
            loss = loss_fn(logits.reshape(-1, V), tgt.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(float(loss))
        return n

    for k in range(a.warmup):
        step(k)
    real = 0
    t0 = time.perf_counter()
    for k in range(a.steps):
        real += step(a.warmup + k)
    secs = time.perf_counter() - t0
    print(json.dumps({
        "peer": "pytorch-cpu" + ("-packed" if a.packed else ""), "model": a.model,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blasThreads": a.blas_threads if a.blas_threads is not None else a.threads,
        "batch": B, "length": L, "vocab": V, "units": U,
        "steps": a.steps, "warmup": a.warmup,
        "realTokens": real,
        "seconds": round(secs, 3),
        "msPerStep": round(1000 * secs / a.steps, 1),
        "tokensPerSec": round(real / secs, 1),
        "paddedTokensPerSec": round(B * L * a.steps / secs, 1),
        "lossFirst": round(losses[0], 4), "lossLast": round(losses[-1], 4),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
