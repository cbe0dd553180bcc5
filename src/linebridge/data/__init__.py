"""The data stage: OpenMoji SVGs → prepared PNGs, splits and test protocols, datasets, reference augmentation."""
