// Result<T>: the library's error type; an errno-style code plus a message with context.
#pragma once

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace blk {

struct Error {
    int code = EIO;        // errno value (EINVAL, EIO, ENOTSUP, ...)
    std::string message;   // "context: reason", no trailing newline

    // Prepends a context: "ctx: message".
    Error with_context(const std::string& ctx) const& { return Error{code, ctx + ": " + message}; }
    Error with_context(const std::string& ctx) && { return Error{code, ctx + ": " + std::move(message)}; }
};

inline Error make_error(int code, std::string msg) { return Error{code, std::move(msg)}; }

// An error from an errno value: "msg: strerror(code)".
inline Error errno_error(int code, const std::string& msg) {
    return Error{code, msg + ": " + std::strerror(code)};
}

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const Error& error() const& { return std::get<1>(v_); }
    Error&& error() && { return std::get<1>(std::move(v_)); }

    Result context(const std::string& ctx) && {
        if (ok()) return std::move(*this);
        return std::move(*this).error().with_context(ctx);
    }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error e) : e_(std::move(e)) {}

    bool ok() const { return !e_.has_value(); }
    explicit operator bool() const { return ok(); }
    const Error& error() const& { return *e_; }
    Error&& error() && { return std::move(*e_); }

    Result context(const std::string& ctx) && {
        if (ok()) return {};
        return std::move(*e_).with_context(ctx);
    }

private:
    std::optional<Error> e_;
};

using Status = Result<void>;

}  // namespace blk

#define BLK_CONCAT_INNER(a, b) a##b
#define BLK_CONCAT(a, b) BLK_CONCAT_INNER(a, b)

// Returns the error of a Result<...> expression from the enclosing function.
#define BLK_TRY(expr)                                        \
    do {                                                     \
        auto&& blk_try_r_ = (expr);                          \
        if (!blk_try_r_) return std::move(blk_try_r_).error(); \
    } while (0)

// Declares or assigns `lhs` from a Result<T> expression, returning its error on failure.
#define BLK_TRY_ASSIGN(lhs, expr) BLK_TRY_ASSIGN_IMPL(BLK_CONCAT(blk_try_v_, __LINE__), lhs, expr)
#define BLK_TRY_ASSIGN_IMPL(tmp, lhs, expr)          \
    auto tmp = (expr);                               \
    if (!tmp) return std::move(tmp).error();         \
    lhs = std::move(tmp).value()
