// qcow2: placeholder until the read path lands.
#include "blk/driver.h"

namespace blk {

DriverSpec qcow2_driver() {
    DriverSpec d;
    d.name = "qcow2";
    d.kind = DriverKind::Format;
    d.description = "QEMU copy-on-write image, version 2 and 3";
    d.options = {{"file", OptType::Child, "the file holding the image"}, {"backing", OptType::Child, "backing image"}};
    d.open = [](OpenContext&, const Json&) -> Result<std::shared_ptr<Node>> {
        return make_error(ENOTSUP, "qcow2 is not implemented yet");
    };
    return d;
}

}  // namespace blk
