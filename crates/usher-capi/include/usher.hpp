// usher: floating licenses. Header-only C++17 wrapper over the C API (usher.h).
//
// RAII: usher::client owns an usher_client (freed, with every seat checked in, on
// destruction); usher::license owns an usher_license (checked in on destruction).
//
// Errors are exceptions (usher::error, carrying the C status code), not expected-style
// results: a constructor that acquires a seat has no other way to fail, C++17 has no
// std::expected, and a program that cannot get its license usually cannot go on. Calls
// that merely report (status(), lease_id()...) never throw for a granted license.
// Destructors never throw.
//
// Thread-safety is that of the C functions (see usher.h): one client may be shared by
// threads; a license must not be destroyed while another thread uses it.
#ifndef USHER_HPP
#define USHER_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "usher.h"

namespace usher {

/// A failed usher call: what() is the message and detail, code() the USHER_E_* value.
class error : public std::runtime_error {
public:
    error(int32_t code, const std::string &detail)
        : std::runtime_error(std::string(usher_status_message(code)) +
                             (detail.empty() ? "" : ": " + detail)),
          code_(code) {}
    /// The C status code (negative).
    int32_t code() const noexcept { return code_; }
    /// Whether trying again later may succeed.
    bool retryable() const noexcept { return usher_status_retryable(code_) != 0; }

private:
    int32_t code_;
};

namespace detail {
inline void check(int32_t rc) {
    if (rc != USHER_OK) {
        char buf[512];
        buf[0] = '\0';
        usher_last_error_detail(buf, sizeof buf);
        throw error(rc, buf);
    }
}
} // namespace detail

/// Seats held; checked in when destroyed (or by checkin()).
class license {
public:
    license(license &&other) noexcept : lic_(std::exchange(other.lic_, nullptr)) {}
    license &operator=(license &&other) noexcept {
        if (this != &other) {
            reset();
            lic_ = std::exchange(other.lic_, nullptr);
        }
        return *this;
    }
    license(const license &) = delete;
    license &operator=(const license &) = delete;
    ~license() { reset(); }

    /// USHER_STATUS_* (never blocks). Throws for a queued checkout that failed.
    int32_t status() const {
        int32_t s = 0;
        detail::check(usher_license_status(lic_, &s));
        return s;
    }
    /// Whether the seats were lost (removed by an administrator, session expired).
    bool lost() const { return status() == USHER_STATUS_LOST; }
    /// The lease id administrators see.
    uint64_t lease_id() const {
        uint64_t id = 0;
        detail::check(usher_license_lease_id(lic_, &id));
        return id;
    }
    /// Seats held.
    uint32_t count() const {
        uint32_t n = 0;
        detail::check(usher_license_count(lic_, &n));
        return n;
    }
    /// The granting server, `port@host`.
    std::string server() const {
        char buf[300];
        detail::check(usher_license_server(lic_, buf, sizeof buf));
        return buf;
    }
    /// The server-signed statement of a grant verified against a vendor key
    /// (`USHER_OPT_VENDOR_KEY`), as text; empty when the grant was not verified.
    std::string statement() const {
        char buf[16384];
        detail::check(usher_license_statement(lic_, buf, sizeof buf));
        return buf;
    }
    /// Checks the seats in now (the destructor then does nothing).
    void checkin() {
        usher_license *lic = std::exchange(lic_, nullptr);
        detail::check(usher_checkin(lic));
    }

private:
    friend class client;
    explicit license(usher_license *lic) noexcept : lic_(lic) {}
    void reset() noexcept {
        if (lic_ != nullptr) {
            usher_checkin(std::exchange(lic_, nullptr));
        }
    }
    usher_license *lic_;
};

/// A license client. Destroy its licenses before it (or let it check them in).
class client {
public:
    /// Servers like "1648@host1,1648@host2"; empty: USHER_LICENSE, then discovery.
    explicit client(const std::string &servers = "") {
        detail::check(usher_client_new(servers.empty() ? nullptr : servers.c_str(), &c_));
    }
    client(client &&other) noexcept : c_(std::exchange(other.c_, nullptr)) {}
    client &operator=(client &&other) noexcept {
        if (this != &other) {
            usher_client_free(c_);
            c_ = std::exchange(other.c_, nullptr);
        }
        return *this;
    }
    client(const client &) = delete;
    client &operator=(const client &) = delete;
    ~client() { usher_client_free(c_); }

    /// Sets an integer option (USHER_OPT_*), before the first checkout.
    client &set(int32_t option, int64_t value) {
        detail::check(usher_client_set_int(c_, option, value));
        return *this;
    }
    /// Sets a string option (USHER_OPT_VENDOR_KEY...), before the first checkout.
    client &set(int32_t option, const std::string &value) {
        detail::check(usher_client_set_str(c_, option, value.c_str()));
        return *this;
    }
    /// Checks out seats (flags: USHER_CHECKOUT_*; timeout in ms or USHER_WAIT_FOREVER).
    license checkout(const std::string &feature, const std::string &version = "",
                     uint32_t count = 1, int32_t flags = USHER_CHECKOUT_NOWAIT,
                     int64_t timeout_ms = 0) {
        usher_license *lic = nullptr;
        detail::check(usher_checkout(c_, feature.c_str(), version.c_str(), count, flags,
                                     timeout_ms, &lic));
        return license(lic);
    }
    /// Manual heartbeat mode: heartbeat and deliver events on this thread.
    void heartbeat() { detail::check(usher_heartbeat(c_)); }
    /// The C handle, for calls this wrapper does not cover.
    usher_client *get() const noexcept { return c_; }

private:
    usher_client *c_ = nullptr;
};

} // namespace usher

#endif // USHER_HPP
