// The driver registry: every built-in driver, found by name.
#include <algorithm>

#include "blk/driver.h"

namespace blk {

// One line per built-in driver; each lives in its own file pair.
DriverSpec file_driver();
DriverSpec null_co_driver();
DriverSpec raw_driver();
DriverSpec qcow2_driver();
DriverSpec preallocate_driver();
DriverSpec inject_error_driver();

void Registry::add(DriverSpec spec) {
    std::string name = spec.name;
    drivers_.insert_or_assign(std::move(name), std::move(spec));
}

const DriverSpec* Registry::find(std::string_view name) const {
    auto it = drivers_.find(name);
    return it == drivers_.end() ? nullptr : &it->second;
}

std::vector<const DriverSpec*> Registry::all() const {
    std::vector<const DriverSpec*> out;
    for (const auto& [name, spec] : drivers_) out.push_back(&spec);
    return out;
}

const Registry& Registry::builtin() {
    static const Registry reg = [] {
        Registry r;
        r.add(file_driver());
        r.add(null_co_driver());
        r.add(raw_driver());
        r.add(qcow2_driver());
        r.add(preallocate_driver());
        r.add(inject_error_driver());
        return r;
    }();
    return reg;
}

}  // namespace blk
