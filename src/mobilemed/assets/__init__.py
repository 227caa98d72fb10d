"""Offline-first assets: a cache folder for datasets and weights that an air-gapped site can fill by hand.

Layout under MOBILEMED_HOME (default: $XDG_CACHE_HOME/mobilemed or ~/.cache/mobilemed):
  medmnist/<name>[_<size>].npz     official MedMNIST files, md5-verified against the medmnist package
  weights/<arch>_imagenet.pth      ImageNet state_dicts for torchvision architectures
  manifest.json                    what was added, from where, with its checksum

One module per concern: `home` (the folder and hashing), `medmnist_files`, `weights` (which needs the
model registry) and `index` (the manifest). Library code imports the module it needs, so that `data`
reaches the cache without reaching `models`; this package re-exports the public names for the CLI.
"""
from mobilemed.assets.home import file_digest, home
from mobilemed.assets.index import read_manifest, verify_cache
from mobilemed.assets.medmnist_files import (MEDMNIST_SIZES, add_medmnist_file, ensure_medmnist, medmnist_filename,
                                             medmnist_info)
from mobilemed.assets.weights import add_weights_file, load_imagenet_state, weights_path

__all__ = ["MEDMNIST_SIZES", "add_medmnist_file", "add_weights_file", "ensure_medmnist", "file_digest", "home",
           "load_imagenet_state", "medmnist_filename", "medmnist_info", "read_manifest", "verify_cache",
           "weights_path"]
