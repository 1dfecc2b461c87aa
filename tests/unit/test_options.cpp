// Unit tests for the options grammar: dotted keys, json: filenames, sizes, booleans, schemas.
#include <doctest/doctest.h>

#include "blk/options.h"

using blk::Json;

TEST_CASE("dotted keys nest and ,, escapes a comma") {
    auto r = blk::parse_dotted("driver=qcow2,file.filename=a,,b.qcow2,file.driver=file");
    REQUIRE(r);
    CHECK((*r)["driver"] == "qcow2");
    CHECK((*r)["file"]["filename"] == "a,b.qcow2");
    CHECK((*r)["file"]["driver"] == "file");
}

TEST_CASE("numeric components make arrays") {
    auto r = blk::parse_dotted("driver=quorum,children.0.file.filename=a,children.1.file.filename=b,vote-threshold=2");
    REQUIRE(r);
    REQUIRE((*r)["children"].is_array());
    CHECK((*r)["children"].size() == 2);
    CHECK((*r)["children"][1]["file"]["filename"] == "b");
}

TEST_CASE("array indices must be contiguous and not mixed with names") {
    CHECK_FALSE(blk::parse_dotted("children.0.driver=raw,children.2.driver=raw"));
    CHECK_FALSE(blk::parse_dotted("children.0.driver=raw,children.x.driver=raw"));
}

TEST_CASE("a key used both as a value and as an object is refused") {
    auto r = blk::parse_dotted("file=x,file.filename=y");
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("file") != std::string::npos);
    CHECK_FALSE(blk::parse_dotted("file.filename=y,file=x"));
}

TEST_CASE("empty keys and key components are refused") {
    CHECK_FALSE(blk::parse_dotted("=x"));
    CHECK_FALSE(blk::parse_dotted("file..filename=x"));
    CHECK_FALSE(blk::parse_dotted("a=b,,,=c"));
}

TEST_CASE("a repeated key keeps the last value, as QemuOpts does") {
    auto r = blk::parse_dotted("driver=raw,driver=qcow2");
    REQUIRE(r);
    CHECK((*r)["driver"] == "qcow2");
}

TEST_CASE("implied key takes the first bare value") {
    auto r = blk::parse_dotted("secret,id=sec0,data=a,,b", "qom-type");
    REQUIRE(r);
    CHECK((*r)["qom-type"] == "secret");
    CHECK((*r)["data"] == "a,b");
}

TEST_CASE("json: filenames parse, with dotted keys expanded") {
    auto r = blk::parse_json_filename(R"(json:{"driver":"qcow2","file.filename":"x","file.driver":"file"})");
    REQUIRE(r);
    CHECK((*r)["file"]["filename"] == "x");
    CHECK((*r)["file"]["driver"] == "file");
    CHECK_FALSE(blk::parse_json_filename("json:{\"driver\":"));
    CHECK_FALSE(blk::parse_json_filename("json:[1,2]"));
    CHECK(blk::is_json_filename("json:{}"));
    CHECK_FALSE(blk::is_json_filename("a.json"));
}

TEST_CASE("sizes take suffixes and fractions and refuse garbage") {
    CHECK(*blk::parse_size("0") == 0);
    CHECK(*blk::parse_size("512") == 512);
    CHECK(*blk::parse_size("64k") == 65536);
    CHECK(*blk::parse_size("64K") == 65536);
    CHECK(*blk::parse_size("1M") == (1u << 20));
    CHECK(*blk::parse_size("1.5G") == 1610612736ull);
    CHECK(*blk::parse_size("1T") == (1ull << 40));
    CHECK(*blk::parse_size("8E") == (8ull << 60));
    CHECK_FALSE(blk::parse_size("16E"));
    CHECK_FALSE(blk::parse_size("-1"));
    CHECK_FALSE(blk::parse_size("12Q"));
    CHECK_FALSE(blk::parse_size("1.5"));
    CHECK_FALSE(blk::parse_size(""));
    CHECK_FALSE(blk::parse_size("k"));
    CHECK_FALSE(blk::parse_size("99999999999999999999999"));
}

TEST_CASE("booleans are on/off/true/false/yes/no") {
    CHECK(*blk::parse_bool("on"));
    CHECK(*blk::parse_bool("true"));
    CHECK(*blk::parse_bool("yes"));
    CHECK_FALSE(*blk::parse_bool("off"));
    CHECK_FALSE(*blk::parse_bool("false"));
    CHECK_FALSE(blk::parse_bool("maybe"));
}

TEST_CASE("validation names an unknown key as qemu does") {
    blk::Schema s = {{"offset", blk::OptType::Size, "x"}};
    auto st = blk::validate_options(Json{{"driver", "raw"}, {"ofset", "1"}}, s, "raw");
    REQUIRE_FALSE(st);
    CHECK(st.error().message == "Block format 'raw' does not support the option 'ofset'");
    auto sp = blk::validate_options(Json{{"driver", "file"}, {"x", "1"}}, s, "file", true);
    REQUIRE_FALSE(sp);
    CHECK(sp.error().message == "Block protocol 'file' doesn't support the option 'x'");
    CHECK(blk::validate_options(Json{{"driver", "raw"}, {"offset", "4k"}, {"cache", {{"direct", "on"}}}}, s, "raw"));
    CHECK_FALSE(blk::validate_options(Json{{"driver", "raw"}, {"cache", {{"bogus", "on"}}}}, s, "raw"));
}

TEST_CASE("validation checks value types") {
    blk::Schema s = {{"size", blk::OptType::Size, ""},
                     {"on", blk::OptType::Bool, ""},
                     {"mode", blk::OptType::Enum, "", {"a", "b"}},
                     {"n", blk::OptType::Int, ""}};
    CHECK_FALSE(blk::validate_options(Json{{"size", "12Q"}}, s, "d"));
    CHECK_FALSE(blk::validate_options(Json{{"on", "perhaps"}}, s, "d"));
    CHECK_FALSE(blk::validate_options(Json{{"mode", "c"}}, s, "d"));
    CHECK_FALSE(blk::validate_options(Json{{"n", "x1"}}, s, "d"));
    CHECK(blk::validate_options(Json{{"size", 4096}, {"on", true}, {"mode", "b"}, {"n", "-3"}}, s, "d"));
}

TEST_CASE("typed getters convert strings") {
    Json o = {{"size", "1M"}, {"flag", "off"}, {"n", "42"}, {"s", "x"}};
    CHECK(**blk::opt_size(o, "size") == (1u << 20));
    CHECK_FALSE(**blk::opt_bool(o, "flag"));
    CHECK(**blk::opt_int(o, "n") == 42);
    CHECK(**blk::opt_string(o, "s") == "x");
    CHECK_FALSE(blk::opt_size(o, "missing")->has_value());
}

TEST_CASE("json: filenames print in qemu's key order and spacing") {
    Json o = Json::object();
    o["driver"] = "raw";
    o["offset"] = "4096";
    o["size"] = "65536";
    o["file"] = Json{{"driver", "file"}, {"filename", "r.raw"}};
    CHECK(blk::to_json_filename(o) ==
          R"(json:{"offset": "4096", "driver": "raw", "size": "65536", "file": {"driver": "file", "filename": "r.raw"}})");
}

TEST_CASE("qemu's dictionary order puts later inserts first within a bucket") {
    auto order = blk::qemu_dict_order({"virtual-size", "filename", "format"});
    REQUIRE(order.size() == 3);
    // As qemu-img prints info: virtual-size, filename, format.
    CHECK(order[0] == 0);
    CHECK(order[1] == 1);
    CHECK(order[2] == 2);
}

TEST_CASE("JSON strings are escaped as qemu writes them") {
    CHECK(blk::qemu_json_quote("a\"b\\c\n") == "\"a\\\"b\\\\c\\n\"");
    CHECK(blk::qemu_json_quote("\xc3\xa9") == "\"\\u00E9\"");                      // é
    CHECK(blk::qemu_json_quote("\xf0\x9f\x98\x80") == "\"\\uD83D\\uDE00\"");      // U+1F600
    CHECK(blk::qemu_json_quote("x\xffy") == "\"x\\uFFFDy\"");                        // invalid byte
    CHECK(blk::qemu_json_quote("\x01\x7f") == "\"\\u0001\\u007F\"");
    CHECK(blk::qemu_json_quote("\xc0\x80") == "\"\\u0000\"");                       // modified UTF-8 NUL
    CHECK(blk::qemu_json_quote("\xc1\x81") == "\"\\uFFFD\"");                       // overlong
}

TEST_CASE("create options: flat keys, ,, escapes, last value wins, help") {
    auto o = blk::parse_create_options("size=1G,backing_file=a,,b.img,cluster_size=4k,size=2G,encrypt.format=luks");
    REQUIRE(o);
    CHECK((*o)["size"] == "2G");
    CHECK((*o)["backing_file"] == "a,b.img");
    CHECK((*o)["cluster_size"] == "4k");
    CHECK((*o)["encrypt.format"] == "luks");
    CHECK(o->size() == 4);
    auto h = blk::parse_create_options("cluster_size=64k,?");
    REQUIRE(h);
    CHECK((*h)["help"] == true);
    auto hv = blk::parse_create_options("help=1");
    REQUIRE(hv);
    CHECK((*hv)["help"] == "1");  // a value: an (invalid) option, not a request for help
    auto no = blk::parse_create_options("nolazy_refcounts,nocow");
    REQUIRE(no);
    CHECK((*no)["lazy_refcounts"] == "off");
    CHECK((*no)["cow"] == "off");  // qemu's short form strips "no", so nocow is cow=off
    auto b = blk::parse_create_options("lazy_refcounts,,,x=1");
    REQUIRE(b);
    CHECK((*b)["lazy_refcounts,"] == "on");
    CHECK(blk::parse_create_options("")->empty());
    CHECK_FALSE(blk::parse_create_options("=5"));
}

TEST_CASE("json: filenames take qemu's single-quoted strings and its escapes") {
    auto r = blk::parse_json_filename(R"(json:{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true })");
    REQUIRE(r);
    CHECK((*r)["driver"] == "null-co");
    CHECK((*r)["size"] == 1048576);
    CHECK((*r)["read-zeroes"] == true);
    auto q = blk::parse_json_filename(R"(json:{'a': 'it\'s "x"', "b": "it\'s", 'c': '\u00e9\/'})");
    REQUIRE(q);
    CHECK((*q)["a"] == "it's \"x\"");
    CHECK((*q)["b"] == "it's");
    CHECK((*q)["c"] == "\xC3\xA9/");
    auto multi = blk::parse_json_filename("json:{\n  'driver': 'blkdebug',\n\t'image': {'driver': 'null-co'}\n}");
    REQUIRE(multi);
    CHECK((*multi)["image"]["driver"] == "null-co");
}

TEST_CASE("qemu JSON errors use qemu's words and name the position") {
    auto msg = [](std::string_view s) {
        auto r = blk::parse_json_filename(s);
        REQUIRE_FALSE(r);
        return r.error().message;
    };
    CHECK(msg("json:{'a':'b\\x'}") ==
          "Could not parse the JSON options: JSON parse error, invalid escape sequence in string (at column 13)");
    CHECK(msg("json:{'a' 'b', 'c': 01}") == "Could not parse the JSON options: JSON parse error, stray '01' (at column 21)");
    CHECK(msg("json:{'a':1}}") == "Could not parse the JSON options: Expecting at most one JSON value (at column 13)");
    CHECK(msg("json:{'a':1, 'a':2}") == "Could not parse the JSON options: JSON parse error, duplicate key (at column 14)");
    CHECK(msg("json:{'a'") == "Could not parse the JSON options: JSON parse error, premature EOI (at column 10)");
    CHECK(msg("json:") == "Could not parse the JSON options: Expecting a JSON value");
    CHECK(msg("json:{\n 'a': tru\n}") ==
          "Could not parse the JSON options: JSON parse error, invalid keyword 'tru' (at line 2, column 7)");
    CHECK(msg("json:{'a':'\\ud800'}").find("\\ud800 is not a valid Unicode character") != std::string::npos);
    CHECK(msg("json:{'a':'x\ty'}").find("stray ''x\t'") != std::string::npos);
    CHECK(msg("json:{'a': 0x1}").find("expected separator in dict") != std::string::npos);
    std::string deep = "json:{'a':" + std::string(1024, '[') + std::string(1024, ']') + "}";
    CHECK(msg(deep).find("JSON nesting depth limit exceeded") != std::string::npos);
}

TEST_CASE("qemu JSON numbers: int64, then uint64, then double") {
    auto r = blk::parse_qemu_json("[-0, 18446744073709551615, 18446744073709551616, 1e3]");
    REQUIRE(r);
    CHECK((*r)[0].is_number_integer());
    CHECK((*r)[1] == 18446744073709551615ull);
    CHECK((*r)[2].is_number_float());
    CHECK((*r)[3] == 1000.0);
}
