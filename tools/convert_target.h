// convert's target safety: a new image is written under a hidden temporary name beside the
// target and renamed into place after the final flush; SIGINT/SIGTERM/SIGHUP cancel the copy.
#pragma once

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "blk/driver.h"

namespace blkimg {

// While alive: SIGINT, SIGTERM and SIGHUP set a flag the copy engine polls, so the copy stops
// and the command cleans up and says so. A second such signal removes the guarded files at
// once and exits (for a copy stuck in I/O). SIGPIPE is ignored: a closed progress pipe is
// reported, not fatal.
class Interrupts {
public:
    Interrupts();
    ~Interrupts();
    Interrupts(const Interrupts&) = delete;
    Interrupts& operator=(const Interrupts&) = delete;

    const std::atomic<bool>* flag() const;
    bool raised() const;
    // "SIGINT", "SIGTERM", "SIGHUP" (the first signal that arrived).
    std::string signal_name() const;
    // The files a second signal removes before exiting (temporary target, data file).
    void guard_paths(const std::vector<std::string>& paths);
};

// Where a new target is written. For a free path: a hidden temporary file
// ".NAME.blkimg-XXXXXX" beside it, renamed onto the path by commit(). For an existing file
// (regular, device or other): the file itself, written in place as qemu-img does, so its
// inode, owner, mode and hard links stay; a regular file or block device is flagged
// incomplete while it is written.
class NewTarget {
public:
    NewTarget() = default;
    NewTarget(NewTarget&& o) noexcept;
    NewTarget& operator=(NewTarget&& o) noexcept;
    ~NewTarget();  // discards what commit() did not keep

    // Checks `target` (a directory is refused; an existing file must not be in use: its
    // qemu locks are taken and held until commit) and makes the temporary file. Where the
    // directory refuses a new file but the target exists and may be written, the target is
    // written in place (as qemu-img does) and flagged instead.
    // `data_file`: the external data file the create will make ("" if none); it is removed on
    // failure if it did not exist before. Errors are the bare reason ("Could not create 'x':
    // Is a directory").
    static blk::Result<NewTarget> prepare(const std::string& target, const std::string& data_file);

    // The path create_image and the open write to.
    const std::string& write_path() const { return write_path_; }
    // True when writing to the target in place (no temporary file).
    bool direct() const { return direct_; }
    // True when the target written in place should carry the incomplete flag: a block
    // device, or a regular file in a directory where no temporary file can be made.
    bool flag_in_place() const { return direct_ && flag_; }
    // True when a regular file was at the target path before (commit replaces it).
    bool replaces() const { return replaces_; }
    // Files to remove if the process must stop at once.
    std::vector<std::string> cleanup_paths() const;
    // A message with the temporary path replaced by the target's name.
    std::string describe(const std::string& message) const;

    // Renames the temporary file onto the target (and, with `sync`, makes the rename durable).
    blk::Status commit(bool sync);
    // Removes the temporary file and a data file the create made.
    void discard();

private:
    std::string target_;      // as the user named it
    std::string final_path_;  // the host path it names (symlinks resolved)
    std::string write_path_;  // temporary file, or final_path_ when direct_
    std::string data_file_;   // removed on failure ("" if none, or it existed before)
    bool direct_ = false;
    bool flag_ = false;
    bool replaces_ = false;
    bool done_ = true;        // nothing left to clean up
    std::optional<blk::Graph> lock_;  // the replaced file, held open with qemu's write locks
};

}  // namespace blkimg
