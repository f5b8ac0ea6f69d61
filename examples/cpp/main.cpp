// ssl_predict: run an ssl-export TorchScript model (model.ts or model_int8.ts) from C++ with libtorch.
//
//   ssl_predict MODEL.ts INPUT.npy [--output LOGITS.npy] [--metadata metadata.json] [--threads N]
//
// INPUT.npy holds float32 pixels in [0, 1], shape N×C×H×W (normalization is inside the model). Prints one
// line per image: index, predicted class, its softmax probability. --output writes the logits as float32
// .npy (N×K). Class names come from the export's metadata.json, found beside the model unless named.
// Bad input exits 1 with one line "error: ...".

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The value of 'key' in a .npy header dict such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 8, 8), }.
std::string npy_field(const std::string& header, const std::string& key, const std::string& path) {
  const auto at = header.find("'" + key + "':");
  const auto begin = at == std::string::npos ? at : header.find_first_not_of(' ', at + key.size() + 3);
  auto end = std::string::npos;  // one past the value
  if (begin != std::string::npos) {
    const char close = header[begin] == '(' ? ')' : header[begin] == '\'' ? '\'' : 0;  // tuple, string, scalar
    end = close ? header.find(close, begin + 1) : header.find_first_of(",}", begin);
    if (close && end != std::string::npos) ++end;
  }
  if (end == std::string::npos) throw Error(path + ": .npy header without a readable '" + key + "'");
  return header.substr(begin, end - begin);
}

// A float32 C-order N×C×H×W array from a NumPy .npy file (format versions 1-3).
torch::Tensor read_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw Error(path + ": not a NumPy .npy file");
  const auto u8 = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])); };
  if (u8(6) < 1 || u8(6) > 3) throw Error(path + ": .npy format version " + std::to_string(u8(6)) + ", expected 1-3");
  const bool v1 = u8(6) == 1;
  const std::size_t prefix = v1 ? 10 : 12;
  const std::size_t header_len = v1 ? u8(8) | u8(9) << 8 : u8(8) | u8(9) << 8 | u8(10) << 16 | u8(11) << 24;
  if (bytes.size() < prefix + header_len) throw Error(path + ": truncated .npy header");
  const std::string header = bytes.substr(prefix, header_len);

  const std::string descr = npy_field(header, "descr", path);
  if (descr != "'<f4'")
    throw Error(path + ": dtype " + descr + ", expected float32 ('<f4'): save it with x.astype(np.float32)");
  if (npy_field(header, "fortran_order", path) != "False")
    throw Error(path + ": Fortran-order array, expected C order: save np.ascontiguousarray(x)");
  std::vector<std::int64_t> shape;
  std::istringstream dims(npy_field(header, "shape", path).substr(1));
  for (std::int64_t d; dims >> d; dims.ignore(1)) shape.push_back(d);
  if (shape.size() != 4) throw Error(path + ": " + std::to_string(shape.size()) + " dimensions, expected N×C×H×W");

  const auto data = bytes.size() - prefix - header_len;
  bool fits = true;  // checked before allocating: a header may claim any shape
  std::size_t count = 1;
  for (const auto d : shape) {
    fits = fits && d >= 0 && (d == 0 || count <= data / static_cast<std::size_t>(d));
    if (fits) count *= static_cast<std::size_t>(d);
  }
  if (!fits || count * sizeof(float) != data)
    throw Error(path + ": " + std::to_string(data) + " data bytes do not hold float32 of shape " +
                c10::str(c10::IntArrayRef(shape)));
  auto pixels = torch::empty(shape, torch::kFloat32);
  std::memcpy(pixels.data_ptr(), bytes.data() + prefix + header_len, data);
  return pixels;
}

// Writes a 2-D float32 tensor as a version 1.0 .npy file.
void write_npy(const std::string& path, const torch::Tensor& values) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(values.size(0)) +
                       ", " + std::to_string(values.size(1)) + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ').push_back('\n');  // data starts on a 64-byte boundary
  std::ofstream out(path, std::ios::binary);
  const char prefix[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<char>(header.size() & 0xff),
                         static_cast<char>(header.size() >> 8)};
  out.write(prefix, sizeof prefix);
  out << header;
  const auto data = values.contiguous();
  out.write(static_cast<const char*>(data.data_ptr()), static_cast<std::streamsize>(data.nbytes()));
  if (!out) throw Error(path + ": cannot write");
}

// JSON, just enough of it to read the top-level "classes" array of metadata.json (written by Python's json
// module: ASCII, non-ASCII as \u escapes).
class Json {
 public:
  Json(std::string text, std::string path) : text_(std::move(text)), path_(std::move(path)) {}

  std::optional<std::vector<std::string>> classes() {
    expect('{');
    while (peek() != '}') {
      const std::string key = string();
      expect(':');
      if (key == "classes") return array();
      skip();
      if (peek() == ',') ++pos_;
    }
    return std::nullopt;
  }

 private:
  char peek() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    if (pos_ == text_.size()) fail("unexpected end");
    return text_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  [[noreturn]] void fail(const std::string& what) {
    throw Error(path_ + ": not readable JSON (" + what + " at byte " + std::to_string(pos_) + ")");
  }

  std::string string() {
    expect('"');
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      char c = text_[pos_++];
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ == text_.size()) fail("unexpected end");
      c = text_[pos_++];
      if (c == 'u') {
        std::uint32_t code = hex4();
        if (code >= 0xD800 && code < 0xDC00 && text_.compare(pos_, 2, "\\u") == 0) {  // surrogate pair
          pos_ += 2;
          code = 0x10000 + ((code - 0xD800) << 10) + (hex4() - 0xDC00);
        }
        utf8(code, out);
      } else {
        const std::string_view from = "\"\\/bfnrt", to = "\"\\/\b\f\n\r\t";
        const auto i = from.find(c);
        if (i == std::string_view::npos) fail("bad escape");
        out.push_back(to[i]);
      }
    }
    expect('"');
    return out;
  }
  std::uint32_t hex4() {
    if (pos_ + 4 > text_.size()) fail("short \\u escape");
    const auto code = std::stoul(text_.substr(pos_, 4), nullptr, 16);
    pos_ += 4;
    return static_cast<std::uint32_t>(code);
  }
  static void utf8(std::uint32_t code, std::string& out) {
    if (code < 0x80) {
      out.push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out.push_back(static_cast<char>(0xC0 | code >> 6));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | code >> 12));
      out.push_back(static_cast<char>(0x80 | (code >> 6 & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | code >> 18));
      out.push_back(static_cast<char>(0x80 | (code >> 12 & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code >> 6 & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  std::vector<std::string> array() {
    std::vector<std::string> items;
    expect('[');
    while (peek() != ']') {
      items.push_back(string());
      if (peek() == ',') ++pos_;
    }
    ++pos_;
    return items;
  }

  // Skips any value: a scalar, a string, or a nested array/object (whose strings may hold brackets).
  void skip() {
    for (int depth = 0;;) {
      const char c = peek();
      if (depth == 0 && (c == ',' || c == '}' || c == ']')) return;
      if (c == '"') {
        string();
        continue;
      }
      depth += (c == '[' || c == '{') - (c == ']' || c == '}');
      ++pos_;
    }
  }

  std::string text_, path_;
  std::size_t pos_ = 0;
};

std::vector<std::string> read_classes(const std::string& path) {
  auto classes = Json(read_file(path), path).classes();
  if (!classes) throw Error(path + ": no \"classes\" list (expected the metadata.json written by ssl-export)");
  return *classes;
}

bool exists(const std::string& path) { return std::ifstream(path).good(); }

struct Options {
  std::string model, input, output, metadata;
  int threads = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--output" || arg == "--metadata" || arg == "--threads") {
      if (i + 1 == argc) throw Error(arg + ": expected a value");
      const std::string value = argv[++i];
      if (arg == "--output") o.output = value;
      if (arg == "--metadata") o.metadata = value;
      if (arg == "--threads") {
        const auto [end, status] = std::from_chars(value.data(), value.data() + value.size(), o.threads);
        if (status != std::errc{} || end != value.data() + value.size() || o.threads < 1)
          throw Error("--threads " + value + ": expected a positive integer");
      }
    } else if (arg.starts_with("--")) {
      throw Error(arg + ": unknown option (expected --output, --metadata or --threads)");
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2)
    throw Error("usage: ssl_predict MODEL.ts INPUT.npy [--output LOGITS.npy] [--metadata metadata.json] "
                "[--threads N]");
  o.model = positional[0];
  o.input = positional[1];
  if (o.metadata.empty()) {  // metadata.json beside the model, as ssl-export writes it
    const auto slash = o.model.find_last_of('/');
    const std::string beside = (slash == std::string::npos ? "" : o.model.substr(0, slash + 1)) + "metadata.json";
    if (exists(beside)) o.metadata = beside;
  }
  return o;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// The TorchScript interpreter reports an error as a traceback whose last line says what went wrong.
std::string last_line(std::string text) {
  text.erase(text.find_last_not_of(" \n") + 1);
  return text.substr(text.find_last_of('\n') + 1);
}

int run(const Options& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  const auto classes = o.metadata.empty() ? std::vector<std::string>{} : read_classes(o.metadata);
  const torch::Tensor pixels = read_npy(o.input);

  torch::jit::Module model;
  try {
    model = torch::jit::load(o.model, torch::kCPU);
  } catch (const c10::Error& e) {
    throw Error(o.model + ": cannot load as TorchScript: " + first_line(e.what_without_backtrace()));
  }
  model.eval();

  c10::InferenceMode guard;  // no autograd bookkeeping: inference only
  torch::Tensor logits;
  try {
    logits = model.forward({pixels}).toTensor();
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    throw Error(o.model + " on " + o.input + " (shape " + c10::str(pixels.sizes()) +
                "): " + last_line(c10_error ? c10_error->what_without_backtrace() : e.what()));
  }
  if (logits.dim() != 2 || logits.size(0) != pixels.size(0) || logits.scalar_type() != torch::kFloat32)
    throw Error(o.model + ": returned " + c10::str(logits.sizes()) + ", expected float32 logits N×K");
  if (!classes.empty() && logits.size(1) != static_cast<std::int64_t>(classes.size()))
    throw Error(o.metadata + ": " + std::to_string(classes.size()) + " classes, the model returns " +
                std::to_string(logits.size(1)));

  if (!o.output.empty()) write_npy(o.output, logits);
  const auto [confidence, predicted] = torch::softmax(logits, 1).max(1);
  std::printf("index\tclass\tprobability\n");
  for (std::int64_t i = 0; i < logits.size(0); ++i) {
    const auto k = predicted[i].item<std::int64_t>();
    const std::string name = classes.empty() ? std::to_string(k) : classes[static_cast<std::size_t>(k)];
    std::printf("%lld\t%s\t%.6f\n", static_cast<long long>(i), name.c_str(), confidence[i].item<float>());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", first_line(e.what_without_backtrace()).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
