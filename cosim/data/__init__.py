"""Datasets: scikit-learn's bundled digits (offline, the default), MNIST / Fashion-MNIST / CIFAR-10 /
CIFAR-100 through torchvision or from a local copy (including the classic pickled MNIST
``mnist.pkl.gz`` and the python version of CIFAR), and ImageNet32 from its npz batches.

Samples are in ``[0, 1]``; digits and MNIST-like sets are flattened float tensors (``[64]``,
``[784]``), CIFAR and ImageNet32 keep their images ``[3, 32, 32]`` as bytes
(:class:`ByteImages`, floats one batch at a time). A model maps values to source voltages
(``input_gain_V``) or reshapes them for convolutions. The class count is the dataset's
(:attr:`Dataset.n_classes`); training batches of images can be cropped and flipped
(:mod:`cosim.data.augment`).

No data file is unpickled with ``pickle.load``: a pickle may run any code while it loads, and a
configuration (or a checkpoint's stored one) can name any file. ``mnist.pkl.gz`` is read by
:func:`cosim.pickles.load_array_pickle` (numpy arrays and plain containers), CIFAR's batches by
:func:`cosim.pickles.load_record_pickle` (exactly their dict of ``uint8`` arrays, integer and
string lists), ImageNet32's npz files with ``allow_pickle=False``; every array is checked
(dtype, shape, value range) before use. torchvision reads MNIST and Fashion-MNIST from their idx
files (no pickle) and opens the CIFAR batches it downloads only after their MD5 matches the
published ones.
"""

from cosim.data.augment import CropFlip, crop_flip, make_augmentation
from cosim.data.dataset import ByteImages, Dataset
from cosim.data.load import check_data_pickles, load_dataset

__all__ = ["ByteImages", "CropFlip", "Dataset", "check_data_pickles", "crop_flip", "load_dataset", "make_augmentation"]
