#!/usr/bin/env python3
"""Peer for the 'features' benchmark: Keras-architecture VGG16 (up to fc2) in PyTorch on the CPU,
random weights, no torchvision. Prints one JSON line: images per second at the given batch size.

usage: vgg16-peer.py [--batch 8] [--batches 3] [--threads 2]
       vgg16-peer.py --serve ...   prints "ready", then times one batch per "run" line read on stdin and
                                   prints {"seconds": t} (so a benchmark can interleave it with its own runs)
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn

CFG = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']


class Vgg16Fc2(nn.Module):
    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in CFG:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 4096), nn.ReLU(inplace=True))

    def forward(self, x):  # x: [N, 3, 224, 224]
        x = self.features(x)
        return self.fc(torch.flatten(x.permute(0, 2, 3, 1), 1))  # Keras flatten order (channels last)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--batches', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--serve', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Vgg16Fc2().eval()
    x = torch.randn(a.batch, 3, 224, 224) * 50
    with torch.inference_mode():
        model(x)  # warm-up
        if a.serve:
            print(json.dumps({'ready': True, 'torch': torch.__version__, 'threads': torch.get_num_threads()}), flush=True)
            for line in sys.stdin:
                if line.strip() != 'run':
                    break
                t0 = time.perf_counter()
                model(x)
                print(json.dumps({'seconds': time.perf_counter() - t0}), flush=True)
            return
        times = []
        for _ in range(a.batches):
            t0 = time.perf_counter()
            y = model(x)
            times.append(time.perf_counter() - t0)
    assert y.shape == (a.batch, 4096)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({'img_per_s': a.batch / median, 'seconds_per_batch': median, 'batch': a.batch, 'batches': a.batches,
                      'threads': torch.get_num_threads(), 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
