// qemu's JSON dialect (json: filenames, --object {...}): what qemu 7.2's lexer and parser
// accept, the values they build, and their error messages, each with where it happened.
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <vector>

#include "blk/options.h"

namespace blk {

namespace {

// qemu refuses input with more open braces and brackets than this at once.
constexpr long kMaxNesting = 1024;

enum class Tok { LCurly, RCurly, LSquare, RSquare, Colon, Comma, Integer, Float, Keyword, String, Error };

struct Token {
    Tok type;
    std::string_view text;  // as written, quotes and escapes included
    size_t pos;             // offset in the input
};

struct Failure {
    std::string message;
    std::optional<size_t> pos;  // none: the message is about the input as a whole
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Reads the next token at s[i]; false at the end of the input. A byte the lexer cannot go on
// with ends an Error token holding the text so far and that byte (qemu's "stray '...'").
bool lex(std::string_view s, size_t& i, Token& out) {
    while (i < s.size() && is_blank(s[i])) ++i;
    if (i >= s.size()) return false;
    const size_t start = i;
    auto emit = [&](Tok type, size_t end) {
        end = std::min(end, s.size());
        out = Token{type, s.substr(start, end - start), start};
        i = end;
        return true;
    };
    const char c = s[i];
    switch (c) {
        case '{': return emit(Tok::LCurly, i + 1);
        case '}': return emit(Tok::RCurly, i + 1);
        case '[': return emit(Tok::LSquare, i + 1);
        case ']': return emit(Tok::RSquare, i + 1);
        case ':': return emit(Tok::Colon, i + 1);
        case ',': return emit(Tok::Comma, i + 1);
        default: break;
    }
    // Strings: either quote; any byte 0x20..0xFD inside, and after a backslash (the parser
    // judges the escape later).
    auto in_string = [](char b) {
        const auto u = static_cast<unsigned char>(b);
        return u >= 0x20 && u <= 0xFD;
    };
    if (c == '"' || c == '\'') {
        for (size_t j = i + 1;; ++j) {
            if (j >= s.size()) return emit(Tok::Error, j);
            if (s[j] == c) return emit(Tok::String, j + 1);
            if (!in_string(s[j])) return emit(Tok::Error, j + 1);
            if (s[j] == '\\') {
                if (++j >= s.size()) return emit(Tok::Error, j);
                if (!in_string(s[j])) return emit(Tok::Error, j + 1);
            }
        }
    }
    if (c >= 'a' && c <= 'z') {
        size_t j = i;
        while (j < s.size() && s[j] >= 'a' && s[j] <= 'z') ++j;
        return emit(Tok::Keyword, j);
    }
    if (c == '-' || is_digit(c)) {
        size_t j = i;
        auto digits = [&] {
            while (j < s.size() && is_digit(s[j])) ++j;
        };
        if (s[j] == '-' && (++j >= s.size() || !is_digit(s[j]))) return emit(Tok::Error, j + 1);
        const bool zero = s[j] == '0';
        if (zero) {
            ++j;
            if (j < s.size() && is_digit(s[j])) return emit(Tok::Error, j + 1);  // no leading zeros
        } else {
            digits();
        }
        bool is_float = false;
        if (j < s.size() && s[j] == '.') {
            if (++j >= s.size() || !is_digit(s[j])) return emit(Tok::Error, j + 1);
            digits();
            is_float = true;
        }
        // A bare 0 ends before an 'e' (which then starts a keyword), as in qemu's lexer.
        if (j < s.size() && (s[j] == 'e' || s[j] == 'E') && (!zero || is_float)) {
            ++j;
            if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
            if (j >= s.size() || !is_digit(s[j])) return emit(Tok::Error, j + 1);
            digits();
            is_float = true;
        }
        return emit(is_float ? Tok::Float : Tok::Integer, j);
    }
    return emit(Tok::Error, i + 1);
}

// Unicode's rules as qemu applies them to strings: no surrogates, no noncharacters.
bool valid_codepoint(long cp) {
    if (cp < 0 || cp > 0x10FFFF) return false;
    if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return false;
    return !(cp >= 0xD800 && cp <= 0xDFFF);
}

// Modified UTF-8, as qemu keeps strings: U+0000 is C0 80 so that strings stay C strings.
void append_utf8(std::string& out, long cp) {
    if (cp == 0) {
        out += "\xC0\x80";
    } else if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// Length of the valid modified UTF-8 sequence at s[i], 0 if it is not one.
size_t utf8_length(std::string_view s, size_t i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) return 1;
    size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 0;
    if (len == 0 || b >= 0xF8) return 0;  // a continuation byte, or a lead byte beyond U+10FFFF
    long cp = b & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
        if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    static const long kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (len == 2 && cp == 0) return 2;  // C0 80
    if (cp < kMin[len] || !valid_codepoint(cp)) return 0;
    return len;
}

long hex4(std::string_view s, size_t i) {
    long cp = 0;
    for (size_t k = 0; k < 4; ++k) {
        if (i + k >= s.size()) return -1;
        const char c = s[i + k];
        const int d = is_digit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        cp = cp << 4 | d;
    }
    return cp;
}

// Recursive descent over one balanced run of tokens. The first error is the one reported,
// with qemu's words for it.
class Parser {
public:
    Parser(const std::vector<Token>& toks, size_t end) : toks_(toks), end_(end) {}

    std::optional<Json> value() {
        if (k_ >= toks_.size()) return fail("premature EOI", end_);
        const Token& t = toks_[k_];
        switch (t.type) {
            case Tok::LCurly: return object();
            case Tok::LSquare: return array();
            case Tok::String: ++k_; return string(t);
            case Tok::Integer:
            case Tok::Float: ++k_; return number(t);
            case Tok::Keyword:
                ++k_;
                if (t.text == "true") return Json(true);
                if (t.text == "false") return Json(false);
                if (t.text == "null") return Json(nullptr);
                return fail("invalid keyword '" + std::string(t.text) + "'", t.pos);
            default: return fail("expecting value", t.pos);
        }
    }

    const Failure& failure() const { return *failure_; }

private:
    std::nullopt_t fail(std::string what, size_t pos) {
        if (!failure_) failure_ = Failure{"JSON parse error, " + std::move(what), pos};
        return std::nullopt;
    }

    const Token* pop() { return k_ < toks_.size() ? &toks_[k_++] : nullptr; }

    std::optional<Json> object() {
        ++k_;  // '{'
        Json obj = Json::object();
        if (k_ >= toks_.size()) return fail("premature EOI", end_);
        if (toks_[k_].type == Tok::RCurly) {
            ++k_;
            return obj;
        }
        for (;;) {
            if (k_ >= toks_.size()) return fail("premature EOI", end_);
            const Token& key_tok = toks_[k_];
            auto key = value();
            if (!key) return std::nullopt;
            if (!key->is_string()) return fail("key is not a string in object", key_tok.pos);
            const Token* colon = pop();
            if (!colon) return fail("premature EOI", end_);
            if (colon->type != Tok::Colon) return fail("missing : in object pair", colon->pos);
            auto v = value();
            if (!v) return std::nullopt;
            const std::string& name = key->get_ref<const std::string&>();
            if (obj.contains(name)) return fail("duplicate key", key_tok.pos);
            obj[name] = std::move(*v);
            const Token* sep = pop();
            if (!sep) return fail("premature EOI", end_);
            if (sep->type == Tok::RCurly) return obj;
            if (sep->type != Tok::Comma) return fail("expected separator in dict", sep->pos);
        }
    }

    std::optional<Json> array() {
        ++k_;  // '['
        Json arr = Json::array();
        if (k_ >= toks_.size()) return fail("premature EOI", end_);
        if (toks_[k_].type == Tok::RSquare) {
            ++k_;
            return arr;
        }
        for (;;) {
            auto v = value();
            if (!v) return std::nullopt;
            arr.push_back(std::move(*v));
            const Token* sep = pop();
            if (!sep) return fail("premature EOI", end_);
            if (sep->type == Tok::RSquare) return arr;
            if (sep->type != Tok::Comma) return fail("expected separator in list", sep->pos);
        }
    }

    std::optional<Json> string(const Token& t) {
        const std::string_view s = t.text;
        const char quote = s[0];
        std::string out;
        for (size_t i = 1; s[i] != quote;) {
            if (s[i] != '\\') {
                const size_t len = utf8_length(s, i);
                if (len == 0) return fail("invalid UTF-8 sequence in string", t.pos + i);
                out.append(s.substr(i, len));
                i += len;
                continue;
            }
            const size_t esc = i;
            const char e = s[i + 1];
            i += 2;
            switch (e) {
                case '"': out += '"'; continue;
                case '\'': out += '\''; continue;
                case '\\': out += '\\'; continue;
                case '/': out += '/'; continue;
                case 'b': out += '\b'; continue;
                case 'f': out += '\f'; continue;
                case 'n': out += '\n'; continue;
                case 'r': out += '\r'; continue;
                case 't': out += '\t'; continue;
                case 'u': break;
                default: return fail("invalid escape sequence in string", t.pos + esc);
            }
            long cp = hex4(s, i);
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') {
                const long low = hex4(s, i + 2);
                if (low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF);
                    i += 6;
                } else {
                    cp = -1;
                }
            }
            if (!valid_codepoint(cp)) {
                // qemu names the six bytes from the backslash (fewer at the token's end).
                return fail(std::string(s.substr(esc, 6)) + " is not a valid Unicode character", t.pos + esc);
            }
            append_utf8(out, cp);
        }
        return Json(std::move(out));
    }

    // A signed integer if it fits, else unsigned, else a double (as qemu's QNum).
    static std::optional<Json> number(const Token& t) {
        const std::string text(t.text);
        if (t.type == Tok::Integer) {
            errno = 0;
            const long long v = std::strtoll(text.c_str(), nullptr, 10);
            if (errno == 0) return Json(static_cast<int64_t>(v));
            if (text[0] != '-') {
                errno = 0;
                const unsigned long long u = std::strtoull(text.c_str(), nullptr, 10);
                if (errno == 0) return Json(static_cast<uint64_t>(u));
            }
        }
        return Json(std::strtod(text.c_str(), nullptr));
    }

    const std::vector<Token>& toks_;
    size_t end_;
    size_t k_ = 0;
    std::optional<Failure> failure_;
};

// qemu feeds the input through a streamer that cuts it into balanced runs of tokens and
// parses each: a lexical error anywhere in the first run wins over its syntax errors, and
// anything after the first value is an error.
Result<Json> parse(std::string_view text, Failure& failure) {
    std::vector<Token> run;
    long braces = 0, brackets = 0;
    std::optional<Json> result;
    size_t i = 0;
    Token t{};
    auto parse_run = [&]() -> bool {
        Parser p(run, text.size());
        auto v = p.value();
        if (!v) {
            failure = p.failure();
            return false;
        }
        result = std::move(*v);
        return true;
    };
    while (lex(text, i, t)) {
        if (result) {
            failure = Failure{"Expecting at most one JSON value", t.pos};
            return make_error(EINVAL, "");
        }
        if (t.type == Tok::Error) {
            failure = Failure{"JSON parse error, stray '" + std::string(t.text) + "'", t.pos};
            return make_error(EINVAL, "");
        }
        braces += t.type == Tok::LCurly ? 1 : t.type == Tok::RCurly ? -1 : 0;
        brackets += t.type == Tok::LSquare ? 1 : t.type == Tok::RSquare ? -1 : 0;
        run.push_back(t);
        if (braces < 0 || brackets < 0 || (braces == 0 && brackets == 0)) {
            if (!parse_run()) return make_error(EINVAL, "");
            run.clear();
            braces = brackets = 0;
        } else if (braces + brackets > kMaxNesting) {
            failure = Failure{"JSON nesting depth limit exceeded", t.pos};
            return make_error(EINVAL, "");
        }
    }
    if (!run.empty() && !parse_run()) return make_error(EINVAL, "");
    if (!result) {
        failure = Failure{"Expecting a JSON value", std::nullopt};
        return make_error(EINVAL, "");
    }
    return std::move(*result);
}

}  // namespace

Result<Json> parse_qemu_json(std::string_view text, size_t origin) {
    Failure failure;
    auto r = parse(text, failure);
    if (r) return r;
    std::string msg = failure.message;
    if (failure.pos) {
        // Where it went wrong, in the terms an editor uses: lines and columns from 1.
        const size_t pos = *failure.pos;
        size_t line = 1, line_start = 0;
        for (size_t k = 0; k < pos && k < text.size(); ++k) {
            if (text[k] == '\n') {
                ++line;
                line_start = k + 1;
            }
        }
        const size_t column = pos - line_start + 1 + (line == 1 ? origin : 0);
        msg += line == 1 ? " (at column " + std::to_string(column) + ")"
                         : " (at line " + std::to_string(line) + ", column " + std::to_string(column) + ")";
    }
    return make_error(EINVAL, std::move(msg));
}

}  // namespace blk
