import BNData
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whole-file writes that never leave a half-written file under the real name and never
/// write anywhere but the file meant:
/// - a symbolic link is followed to its target, which is replaced (the link keeps pointing at
///   the new content); a target that exists must be a regular file (not a folder, FIFO or
///   device);
/// - the temporary file sits beside the target, named `.bntrain-tmp-PID-XXXXXX` with a random
///   suffix and created exclusively (mkstemp: O_CREAT|O_EXCL, so a prepared file or link at
///   that name is never written through), then flushed to disk and renamed over the target;
/// - the target's permissions are kept (a new file gets 0666 less the umask);
/// - temporaries left by bntrain processes that no longer run are removed.
public enum AtomicFile {
    public static let tempPrefix = ".bntrain-tmp-"

    public static func write(_ bytes: [UInt8], to path: String) throws {
        let real = try resolve(path)
        let dir = folder(of: real)
        removeStaleTemporaries(in: dir)
        var existing = stat()
        let mode: mode_t = stat(real, &existing) == 0 ? existing.st_mode & 0o7777 : 0o666 & ~currentUmask
        var template = Array("\(dir)/\(tempPrefix)\(getpid())-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw CheckpointError.unwritable(path: path, reason: FileCheck.reason(errno: errno)) }
        let tmp = String(cString: template)
        var reason: String?
        if fchmod(fd, mode) != 0 { reason = String(cString: strerror(errno)) }
        if reason == nil {
            reason = bytes.withUnsafeBytes { raw -> String? in
                var done = 0
                while done < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        return String(cString: strerror(errno))
                    }
                    done += n
                }
                return nil
            }
        }
        if reason == nil && fsync(fd) != 0 { reason = String(cString: strerror(errno)) }
        if close(fd) != 0 && reason == nil { reason = String(cString: strerror(errno)) }
        if reason == nil && rename(tmp, real) != 0 { reason = String(cString: strerror(errno)) }
        if let reason {
            unlink(tmp)
            throw CheckpointError.unwritable(path: path, reason: reason)
        }
        // The rename itself reaches the disk with the folder.
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    /// The file a write to `path` replaces: `path` itself, or the final target of a symbolic
    /// link. Refuses a target that exists and is not a regular file, and a dangling link.
    public static func resolve(_ path: String) throws -> String {
        var lst = stat()
        guard lstat(path, &lst) == 0 else {
            if errno == ENOENT { return path }  // a new file; its folder is checked by the write
            throw CheckpointError.unwritable(path: path, reason: FileCheck.reason(errno: errno))
        }
        var real = path
        if lst.st_mode & S_IFMT == S_IFLNK {
            guard let r = realpath(path, nil) else {
                throw CheckpointError.unwritable(path: path, reason: errno == ENOENT ? "it is a symbolic link to a file that cannot be created here (a dangling link); remove the link or point it at a folder that exists" : FileCheck.reason(errno: errno))
            }
            real = String(cString: r)
            free(r)
        }
        var st = stat()
        if stat(real, &st) == 0, st.st_mode & S_IFMT != S_IFREG {
            throw CheckpointError.unwritable(path: path, reason: "it is \(FileCheck.describe(mode: st.st_mode & S_IFMT)), not a regular file")
        }
        return real
    }

    static func folder(of path: String) -> String {
        let dir = (path as NSString).deletingLastPathComponent
        return dir.isEmpty ? "." : dir
    }

    /// Removes `.bntrain-tmp-PID-*` files in `dir` whose process is gone (a crash or kill
    /// during a write). Another running bntrain's temporaries are left alone.
    public static func removeStaleTemporaries(in dir: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix(tempPrefix) {
            let rest = name.dropFirst(tempPrefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                unlink(dir + "/" + name)
            }
        }
    }

    /// The process's umask (read by setting and restoring it once).
    static let currentUmask: mode_t = {
        let m = umask(0o022)
        umask(m)
        return m
    }()

    /// Checks, before any work, that `path` can be written: links resolve, an existing target
    /// is a regular file, and a temporary file can really be created beside it (the folder
    /// exists and is writable, the name is not too long). Nil when fine, else the problem.
    public static func checkWritable(_ path: String) -> String? {
        let real: String
        do { real = try resolve(path) } catch let CheckpointError.unwritable(_, reason) { return "'\(path)': \(reason)" } catch { return "\(error)" }
        let dir = folder(of: real)
        var st = stat()
        guard stat(dir, &st) == 0 else { return "folder '\(dir)': \(FileCheck.reason(errno: errno))" }
        guard st.st_mode & S_IFMT == S_IFDIR else { return "'\(dir)' is not a folder" }
        if FileManager.default.fileExists(atPath: real), access(real, W_OK) != 0 { return "'\(path)' is not writable" }
        var template = Array("\(dir)/\(tempPrefix)\(getpid())-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { return errno == EACCES || errno == EROFS ? "folder '\(dir)' is not writable" : "cannot create a file in '\(dir)': \(FileCheck.reason(errno: errno))" }
        close(fd)
        unlink(String(cString: template))
        let name = (real as NSString).lastPathComponent
        if name.utf8.count > 255 { return "the name '\(name)' is longer than 255 bytes" }
        return nil
    }
}
