// Creating images: the -o options are checked against the format's and the host file's
// create schemas, then the format's create function writes the new image.
#include <algorithm>

#include "blk/driver.h"

namespace blk {

namespace {

const OptSpec* find_create_spec(const Schema& schema, const std::string& key) {
    auto it = std::find_if(schema.begin(), schema.end(), [&](const OptSpec& o) { return o.name == key; });
    return it == schema.end() ? nullptr : &*it;
}

// The value checks qemu's QemuOpts makes on -o values.
Status check_create_value(const OptSpec& spec, const std::string& key, const Json& value) {
    if (!value.is_string()) return {};
    const std::string v = value.get<std::string>();
    switch (spec.type) {
        case OptType::Bool:
            if (v != "on" && v != "off") return make_error(EINVAL, "Parameter '" + key + "' expects 'on' or 'off'");
            break;
        case OptType::Size:
            if (!parse_size(v)) {
                return make_error(EINVAL, "Parameter '" + key +
                                              "' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)");
            }
            break;
        case OptType::Int: {
            Json one = Json::object();
            one[key] = v;
            if (!opt_int(one, key)) return make_error(EINVAL, "Parameter '" + key + "' expects a number");
            break;
        }
        case OptType::Enum:
            if (std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end()) {
                std::string allowed;
                for (const std::string& c : spec.choices) allowed += (allowed.empty() ? "" : ", ") + c;
                return make_error(EINVAL, "Parameter '" + key + "' does not accept value '" + v + "' (allowed: " + allowed + ")");
            }
            break;
        default:
            break;
    }
    return {};
}

}  // namespace

Status create_image(const CreateRequest& req, const Registry& reg) {
    const DriverSpec* fmt = reg.find(req.format);
    if (!fmt || fmt->kind == DriverKind::Filter) return make_error(EINVAL, "Unknown file format '" + req.format + "'");
    if (!fmt->create) return make_error(ENOTSUP, "Format driver '" + req.format + "' does not support image creation");
    const DriverSpec* proto = fmt->kind == DriverKind::Protocol ? nullptr : reg.find("file");
    if (!req.options.is_object()) return make_error(EINVAL, "create options must be an object");
    for (auto it = req.options.begin(); it != req.options.end(); ++it) {
        const OptSpec* spec = find_create_spec(fmt->create_options, it.key());
        if (!spec && proto) spec = find_create_spec(proto->create_options, it.key());
        if (!spec) return make_error(EINVAL, "Invalid parameter '" + it.key() + "'");
        BLK_TRY(check_create_value(*spec, it.key(), it.value()));
    }
    return fmt->create(req, reg);
}

}  // namespace blk
