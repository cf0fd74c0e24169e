#!/usr/bin/python3
"""Writes the tiny Keras-layout HDF5 weight files in test/fixtures/vgg16/ (dev script; the outputs are committed).

The files mimic what Keras' `model.save_weights('x.h5')` (and Keras 1's older writer) produce for a VGG16,
on a reduced "mini" spec with the real layer names but tiny shapes, so the loader's name mapping, shape
validation and values can be tested without the 528 MB original. Layout (as in
vgg16_weights_tf_dim_ordering_tf_kernels.h5):
  root attrs: layer_names (fixed-length bytes), backend, keras_version
  one group per layer, attr weight_names (bytes; empty for pool/flatten/input), datasets at those names.
Values follow a formula that test/features/vgg16/mini.ts recomputes:
  kernel[i] = ((i*7 + L*13) % 23 - 11) / 10,  bias[i] = (i - L) / 4   (L = index among weighted layers)

Run: /usr/bin/python3 scripts/make-h5-fixture.py   (needs python3-h5py and numpy)
     /usr/bin/python3 scripts/make-h5-fixture.py --full /tmp/vgg16_full.h5
       writes a full-size (528 MB) VGG16 file in the same layout and formula, for manual load checks
"""
import os
import sys
import h5py
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'vgg16')

# Mini spec: input 4x4x3 -> conv 3->2, conv 2->2, pool -> 2x2x2 = 8 -> fc1 8->3 -> fc2 3->3 -> predictions 3->2
LAYERS = [
    ('input_1', None),
    ('block1_conv1', (3, 3, 3, 2)),
    ('block1_conv2', (3, 3, 2, 2)),
    ('block1_pool', None),
    ('flatten', None),
    ('fc1', (8, 3)),
    ('fc2', (3, 3)),
    ('predictions', (3, 2)),
]
TOP = {'flatten', 'fc1', 'fc2', 'predictions'}


def values(shape, layer_index):
    n = int(np.prod(shape))
    i = np.arange(n)
    kernel = (((i * 7 + layer_index * 13) % 23) - 11) / 10.0
    out = shape[-1]
    bias = (np.arange(out) - layer_index) / 4.0
    return kernel.reshape(shape).astype('float32'), bias.astype('float32')


def names(style, layer):
    if style == 'legacy':  # Keras 1 / early Keras 2 (the official vgg16_weights_tf_dim_ordering_tf_kernels.h5)
        return layer + '_W_1:0', layer + '_b_1:0'
    if style == 'keras2':  # Keras 2.x: datasets end up at <layer>/<layer>/kernel:0
        return layer + '/kernel:0', layer + '/bias:0'
    if style == 'prefixed':  # tf.keras with a model scope in the variable name
        return 'vgg16/' + layer + '/kernel:0', 'vgg16/' + layer + '/bias:0'
    raise ValueError(style)


def write(path, style, top=True, skip=(), full_model=False):
    with h5py.File(path, 'w') as f:
        root = f.create_group('model_weights') if full_model else f
        layer_names = []
        weighted = 0
        for layer, shape in LAYERS:
            if not top and layer in TOP:
                continue
            if layer in skip:
                if shape is not None:
                    weighted += 1
                continue
            layer_names.append(layer.encode('utf8'))
            g = root.create_group(layer)
            if shape is None:
                g.attrs['weight_names'] = np.array([], dtype='S1')
                continue
            kernel, bias = values(shape, weighted)
            weighted += 1
            kname, bname = names(style, layer)
            g.create_dataset(kname, data=kernel)
            g.create_dataset(bname, data=bias)
            g.attrs['weight_names'] = np.array([kname.encode('utf8'), bname.encode('utf8')])
        root.attrs['layer_names'] = np.array(layer_names)
        root.attrs['backend'] = b'tensorflow'
        root.attrs['keras_version'] = b'2.1.5' if style != 'legacy' else b'1.2.2'


FULL = [('input_1', None)]
for _b, (_n, _cin, _cout) in enumerate([(2, 3, 64), (2, 64, 128), (3, 128, 256), (3, 256, 512), (3, 512, 512)], start=1):
    for _i in range(1, _n + 1):
        FULL.append(('block%d_conv%d' % (_b, _i), (3, 3, _cin if _i == 1 else _cout, _cout)))
    FULL.append(('block%d_pool' % _b, None))
FULL += [('flatten', None), ('fc1', (25088, 4096)), ('fc2', (4096, 4096)), ('predictions', (4096, 1000))]


def main():
    if len(sys.argv) == 3 and sys.argv[1] == '--full':
        global LAYERS
        LAYERS = FULL
        write(sys.argv[2], 'legacy')
        print(sys.argv[2], os.path.getsize(sys.argv[2]))
        return
    os.makedirs(OUT, exist_ok=True)
    write(os.path.join(OUT, 'mini_legacy.h5'), 'legacy')
    write(os.path.join(OUT, 'mini_keras2.h5'), 'keras2')
    write(os.path.join(OUT, 'mini_prefixed_model.h5'), 'prefixed', full_model=True)
    write(os.path.join(OUT, 'mini_legacy_notop.h5'), 'legacy', top=False)
    write(os.path.join(OUT, 'mini_missing_conv2.h5'), 'keras2', skip=('block1_conv2',))
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == '__main__':
    main()
