// Progress for long jobs: qemu-img's "(NN.NN/100%)" lines, a live terminal line with rate and
// ETA, qemu's SIGUSR1 status line, and a JSON-lines stream for scripts on a file descriptor.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "blk/result.h"

namespace blkimg {

struct ProgressConfig {
    bool show = false;      // -p (and not -q): print progress on stdout
    bool terminal = false;  // stdout is a terminal: one live line with rate and ETA
    bool quiet = false;     // -q: no warnings about the progress stream either
    int json_fd = -1;       // --progress-fd: JSON lines to this descriptor (-1: none)
};

// How a job ended, for the last line of the JSON stream.
enum class ProgressEnd { Ok, Failed, Interrupted };

class Progress {
public:
    explicit Progress(ProgressConfig cfg);
    Progress(const Progress&) = delete;
    Progress& operator=(const Progress&) = delete;

    // Prints the starting "(0.00/100%)" line, as qemu-img does before it opens anything.
    void begin();
    // Bytes done out of total so far. Thread-safe; cheap when nothing is due.
    void update(uint64_t done, uint64_t total);
    // Prints the last lines: 100% and the newline qemu-img ends with (just the newline after
    // a failure), and the JSON stream's final object. `error` is the message of a failure.
    void end(ProgressEnd how, const std::string& error = {});

    // Clears the live terminal line before a message goes to stderr (it is redrawn at the
    // next update); nothing to do for qemu's lines, which qemu-img interleaves the same way.
    void clear_line();

    // Checks a --progress-fd value: a number naming a descriptor open for writing.
    static blk::Result<int> parse_fd(const std::string& text);
    // Makes SIGUSR1 print the current percentage to stderr at the next update (qemu-img's
    // behaviour without -p); also keeps SIGUSR1 from killing the process mid-copy.
    static void install_sigusr1();

private:
    using Clock = std::chrono::steady_clock;

    void print_qemu_line(float percent);
    void draw_terminal(bool final);
    void write_json(const std::string& line);
    double elapsed() const;

    ProgressConfig cfg_;
    std::mutex mu_;
    Clock::time_point start_;
    uint64_t done_ = 0;
    uint64_t total_ = 0;
    // qemu's progress state: the percentage as a float and the one last printed.
    float current_ = 0;
    float last_print_ = 0;
    // Terminal line: when it was last drawn, and a smoothed rate (bytes/s).
    Clock::time_point last_draw_{};
    uint64_t rate_done_ = 0;
    Clock::time_point rate_time_{};
    double rate_ = 0;
    bool drawn_ = false;
    // JSON stream: when the last line went out; off after a write error.
    Clock::time_point last_json_{};
    bool json_started_ = false;
    bool json_broken_ = false;
};

}  // namespace blkimg
