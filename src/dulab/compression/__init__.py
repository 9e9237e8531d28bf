"""Lossless compression with discrete likelihood models: entropy coding driven by the model's conditionals.

A model that factorises ``p(x) = prod_i p(x_i | x_<i)`` codes ``x`` in about ``-log2 p(x)`` bits: a range
coder (constriction's) codes each dimension with its conditional, in the model's generation order; the decoder
recomputes the same conditionals from the dimensions decoded so far. Better likelihood, shorter files::

    data = dulab.compression.compress(run_dir, x)        # x: (N, *event) integer levels
    x2 = dulab.compression.decompress(run_dir, data)     # == x, same dtype and shape
    dulab.compression.compress_file(run_dir, "images/", "images.dlz")   # .npy arrays or PNG folders
    dulab.compression.decompress_file(run_dir, "images.dlz", "restored/")

From the command line: ``dulab compress RUN INPUT OUTPUT`` and ``dulab decompress RUN INPUT OUTPUT``.

Models: every discrete autoregressive model (``histogram``, ``logistic_mixture``, ``made``, ``rnn``, ``wavenet``,
``transformer``, ``pixel_cnn``, ``gated_pixel_cnn``, ``pixel_cnn_pp``, ``pixel_snail``), unconditional;
others are refused with a ``UserError`` (see ``conditionals``).

Determinism and portability. Encoder and decoder must compute bit-identical integer tables. dulab makes the
two sides run the same computation: the encoder replays the decoder's steps (same partial inputs, same batch
split, stored in the header), and the float64 -> integer quantisation (``quantize``) is a fixed sequence of
float64 operations. On one machine with the same software this is exact across runs (tested). What can break it
elsewhere is the model's own floating-point output: another CPU (SIMD width, ``exp``/``log`` implementations), a
GPU instead of a CPU or another GPU, another thread count (BLAS and oneDNN split reductions by thread), another
torch/MKL/oneDNN version, or another device for the same file. A tiny difference flips a table entry and the
rest of the file decodes to garbage, so every file carries a SHA-256 of the data and ``decompress`` refuses
(``UserError``) rather than return wrong data. Decode where you encoded, with the same thread count
(``OMP_NUM_THREADS``), or re-encode.

References:
    Witten, Neal, Cleary. "Arithmetic coding for data compression", Communications of the ACM, 1987.
    Townsend, Bird, Barber. "Practical lossless compression with latent variables using bits back coding",
    2019, arXiv:1901.04866 (likelihood models as codecs).
"""

from dulab.compression.codec import FORMAT_VERSION, MAGIC, check_model, compress, decompress, inspect, model_fingerprint
from dulab.compression.conditionals import conditionals_for, supports_compression
from dulab.compression.files import compress_file, decompress_file, read_png_folder, write_png_folder
from dulab.compression.quantize import PRECISION, quantize, quantized_bits

__all__ = ["compress", "decompress", "compress_file", "decompress_file", "inspect", "check_model",
           "model_fingerprint", "conditionals_for", "supports_compression", "quantize", "quantized_bits",
           "read_png_folder", "write_png_folder", "PRECISION", "MAGIC", "FORMAT_VERSION"]
