// A minimal JSON reader (RFC 8259 values; enough for eventspd.manifest.json). Header-only, no
// dependencies. Numbers are doubles; strings are UTF-8 (\uXXXX escapes, surrogate pairs
// included, are encoded back to UTF-8). Errors throw json::ParseError with the byte offset.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace json {

class ParseError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Value {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    Value() = default;
    static Value boolean(bool b) { Value v; v.type_ = Type::Bool; v.bool_ = b; return v; }
    static Value number(double d) { Value v; v.type_ = Type::Number; v.number_ = d; return v; }
    static Value string(std::string s) { Value v; v.type_ = Type::String; v.string_ = std::move(s); return v; }
    static Value array() { Value v; v.type_ = Type::Array; return v; }
    static Value object() { Value v; v.type_ = Type::Object; return v; }

    Type type() const { return type_; }
    bool isNull() const { return type_ == Type::Null; }
    bool isNumber() const { return type_ == Type::Number; }
    bool isString() const { return type_ == Type::String; }
    bool isArray() const { return type_ == Type::Array; }
    bool isObject() const { return type_ == Type::Object; }

    bool asBool() const { expect(Type::Bool, "a boolean"); return bool_; }
    double asNumber() const { expect(Type::Number, "a number"); return number_; }
    // A whole number an int64_t holds (converting any other double, 1e300 or 2.5, is undefined
    // behaviour or silently truncates).
    int64_t asInt() const { return asInt(INT64_MIN, INT64_MAX, "the value"); }
    // ... within [lo, hi]; `what` names the value in the message.
    int64_t asInt(int64_t lo, int64_t hi, char const* what) const {
        double const d = asNumber();
        bool const whole = d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == std::trunc(d);
        if (!whole || static_cast<int64_t>(d) < lo || static_cast<int64_t>(d) > hi)
            throw std::runtime_error(std::string(what) + " is " + number_text() + ", expected an integer in " +
                                     std::to_string(lo) + ".." + std::to_string(hi));
        return static_cast<int64_t>(d);
    }
    std::string const& asString() const { expect(Type::String, "a string"); return string_; }
    std::vector<Value> const& items() const { expect(Type::Array, "an array"); return array_; }
    std::vector<std::pair<std::string, Value>> const& members() const {
        expect(Type::Object, "an object");
        return object_;
    }

    bool has(std::string const& key) const {
        if (type_ != Type::Object) return false;
        for (auto const& kv : object_)
            if (kv.first == key) return true;
        return false;
    }
    // obj["key"]: throws with the key's name when absent (a clear message beats a null).
    Value const& operator[](std::string const& key) const {
        expect(Type::Object, "an object");
        for (auto const& kv : object_)
            if (kv.first == key) return kv.second;
        throw std::runtime_error("missing key \"" + key + "\"");
    }
    Value const& operator[](size_t i) const {
        expect(Type::Array, "an array");
        if (i >= array_.size()) throw std::runtime_error("index " + std::to_string(i) + " out of range");
        return array_[i];
    }
    size_t size() const { return type_ == Type::Array ? array_.size() : type_ == Type::Object ? object_.size() : 0; }

    void push(Value v) { array_.push_back(std::move(v)); }
    void set(std::string k, Value v) { object_.emplace_back(std::move(k), std::move(v)); }

private:
    std::string number_text() const {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%.17g", number_);
        return buf;
    }
    void expect(Type t, char const* what) const {
        if (type_ != t) throw std::runtime_error(std::string("expected ") + what);
    }
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Value> array_;
    std::vector<std::pair<std::string, Value>> object_;  // file order kept
};

namespace detail {

class Parser {
public:
    explicit Parser(std::string const& text) : s_(text) {}

    Value parseDocument() {
        Value v = parseValue(0);
        skipSpace();
        if (pos_ != s_.size()) fail("unexpected text after the value");
        return v;
    }

private:
    [[noreturn]] void fail(std::string const& what) const {
        throw ParseError("JSON: " + what + " at byte " + std::to_string(pos_));
    }
    void skipSpace() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    char peek() {
        skipSpace();
        if (pos_ >= s_.size()) fail("unexpected end");
        return s_[pos_];
    }
    void literal(char const* word) {
        for (char const* c = word; *c; ++c, ++pos_)
            if (pos_ >= s_.size() || s_[pos_] != *c) fail(std::string("expected '") + word + "'");
    }

    Value parseValue(int depth) {
        if (depth > 256) fail("nesting too deep");
        char c = peek();
        if (c == '{') return parseObject(depth);
        if (c == '[') return parseArray(depth);
        if (c == '"') return Value::string(parseString());
        if (c == 't') { literal("true"); return Value::boolean(true); }
        if (c == 'f') { literal("false"); return Value::boolean(false); }
        if (c == 'n') { literal("null"); return Value(); }
        if (c == '-' || (c >= '0' && c <= '9')) return Value::number(parseNumber());
        fail(std::string("unexpected character '") + c + "'");
    }

    Value parseObject(int depth) {
        Value obj = Value::object();
        ++pos_;  // {
        if (peek() == '}') { ++pos_; return obj; }
        for (;;) {
            if (peek() != '"') fail("expected a key string");
            std::string key = parseString();
            if (peek() != ':') fail("expected ':'");
            ++pos_;
            obj.set(std::move(key), parseValue(depth + 1));
            char c = peek();
            ++pos_;
            if (c == '}') return obj;
            if (c != ',') fail("expected ',' or '}'");
        }
    }

    Value parseArray(int depth) {
        Value arr = Value::array();
        ++pos_;  // [
        if (peek() == ']') { ++pos_; return arr; }
        for (;;) {
            arr.push(parseValue(depth + 1));
            char c = peek();
            ++pos_;
            if (c == ']') return arr;
            if (c != ',') fail("expected ',' or ']'");
        }
    }

    static void appendUtf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
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

    uint32_t hex4() {
        if (pos_ + 4 > s_.size()) fail("short \\u escape");
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            char c = s_[pos_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
            else fail("bad \\u escape");
        }
        return v;
    }

    std::string parseString() {
        ++pos_;  // opening quote
        std::string out;
        for (;;) {
            if (pos_ >= s_.size()) fail("unterminated string");
            char c = s_[pos_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
            if (c != '\\') { out += c; continue; }
            if (pos_ >= s_.size()) fail("unterminated escape");
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u') fail("lone surrogate");
                        pos_ += 2;
                        uint32_t lo = hex4();
                        if (lo < 0xDC00 || lo > 0xDFFF) fail("bad surrogate pair");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    appendUtf8(out, cp);
                    break;
                }
                default: fail("bad escape");
            }
        }
    }

    double parseNumber() {
        size_t start = pos_;
        if (s_[pos_] == '-') ++pos_;
        auto digits = [&] {
            size_t n = 0;
            while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') { ++pos_; ++n; }
            return n;
        };
        if (digits() == 0) fail("bad number");
        if (pos_ < s_.size() && s_[pos_] == '.') { ++pos_; if (digits() == 0) fail("bad fraction"); }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
            if (digits() == 0) fail("bad exponent");
        }
        // strtod on a copy: the document is not NUL-terminated at the number's end.
        std::string num = s_.substr(start, pos_ - start);
        return std::strtod(num.c_str(), nullptr);
    }

    std::string const& s_;
    size_t pos_ = 0;
};

}  // namespace detail

inline Value parse(std::string const& text) { return detail::Parser(text).parseDocument(); }

}  // namespace json
