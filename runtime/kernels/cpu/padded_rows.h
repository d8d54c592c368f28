// Included by the 3x3 kernel bodies (conv3x3_body.h, conv_wgrad_body.h) inside each code
// path's namespace, like the bodies: no include guard and no includes (<cstring> comes before).
//
// A 3x3, pad-1 convolution reads, for output rows [h0, h0 + rows) at `stride`, the input
// rows h0 * stride - 1 .. (h0 + rows - 1) * stride + 1. Both kernels copy those rows into a
// zero-padded tile first; they differ only in how an image row is laid out in the tile
// (conv3x3: as is; conv_wgrad: two images' rows interleaved), which `fill` does.

// Writes the padded tile: (rows - 1) * stride + 3 rows of (width + 2) * pos elements, a row
// of zeros where the window is above or below the image, a `pos`-wide zero column on each
// side, and `fill(interior, h)` writing input row h's width * pos elements.
template <typename T, typename Fill>
void fill_padded_rows(int64_t h0, int64_t rows, int64_t stride, int64_t height, int64_t width,
                      int64_t pos, T* tile, Fill fill) {
  const int64_t row = (width + 2) * pos;
  for (int64_t r = 0; r < (rows - 1) * stride + 3; ++r) {
    const int64_t h = h0 * stride - 1 + r;
    T* dst = tile + r * row;
    if (h < 0 || h >= height) {
      std::memset(dst, 0, row * sizeof(T));
      continue;
    }
    std::memset(dst, 0, pos * sizeof(T));
    std::memset(dst + (width + 1) * pos, 0, pos * sizeof(T));
    fill(dst + pos, h);
  }
}
