import CZlib
#if canImport(Glibc)
import Glibc
#endif

/// Sequential reader over a file that may be gzipped (zlib's gzread passes plain files
/// through unchanged). Detects the two common impostors: an HTML/text page saved under a
/// `.gz` name, and a gzip stream that is truncated or fails its CRC.
final class ByteSource {
    let path: String
    private let file: gzFile
    /// True when the file is not gzip-compressed.
    let isRaw: Bool

    init(path: String) throws {
        self.path = path
        // Only regular files: opening a FIFO would block until a writer appears, a device
        // could stream forever, and a folder would read as a "damaged gzip".
        try FileCheck.requireRegularFile(path)
        guard let f = bn_gzopen(path, "rb") else {
            throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        file = f
        gzbuffer(f, 1 << 17)
        // gzdirect is only meaningful after the first read; peek one byte to trigger detection.
        let c = gzgetc(f)
        if c >= 0 { gzungetc(c, f) }
        isRaw = gzdirect(f) != 0
        // Every stored property is set from here on, so a throw below still runs deinit (gzclose).
        if isRaw && path.hasSuffix(".gz") {
            let head = try ByteSource.peekRaw(path: path)
            throw DataError.notGzip(path: path, looksLike: ByteSource.describe(head))
        }
    }

    deinit { gzclose(file) }

    /// Reads up to `count` bytes into `dst`; returns the number read (fewer only at the end).
    func read(into dst: UnsafeMutableRawPointer, count: Int) throws -> Int {
        var done = 0
        while done < count {
            let want = UInt32(min(count - done, 1 << 30))
            let got = gzread(file, dst + done, want)
            if got < 0 { throw corruption() }
            if got == 0 {
                // End of input: a gzip stream cut short reports Z_BUF_ERROR here.
                var err: Int32 = 0
                _ = gzerror(file, &err)
                if err != Z_OK && err != Z_STREAM_END { throw corruption() }
                break
            }
            done += Int(got)
        }
        return done
    }

    /// Counts the bytes left (stops counting after `limit`).
    func remaining(limit: Int = 1 << 20) throws -> Int {
        var scratch = [UInt8](repeating: 0, count: 4096)
        var total = 0
        while total < limit {
            let got = try scratch.withUnsafeMutableBytes { try read(into: $0.baseAddress!, count: 4096) }
            if got == 0 { break }
            total += got
        }
        return total
    }

    private func corruption() -> DataError {
        var err: Int32 = 0
        let msg = gzerror(file, &err).map { String(cString: $0) } ?? "unknown error"
        if err == Z_BUF_ERROR { return .corruptGzip(path: path, reason: "unexpected end of compressed data: the download was cut short") }
        return .corruptGzip(path: path, reason: msg.isEmpty ? "zlib error \(err)" : msg)
    }

    private static func peekRaw(path: String) throws -> [UInt8] {
        guard let fp = fopen(path, "rb") else { return [] }
        defer { fclose(fp) }
        var buf = [UInt8](repeating: 0, count: 256)
        let n = fread(&buf, 1, 256, fp)
        return Array(buf.prefix(n))
    }

    /// A few words on what a non-gzip file seems to be.
    static func describe(_ head: [UInt8]) -> String {
        if head.isEmpty { return "an empty file" }
        let text = String(decoding: head, as: UTF8.self).lowercased()
        if text.contains("<html") || text.contains("<!doctype") || text.contains("<head") { return "an HTML page, for example an error page saved by a failed download" }
        if head.count >= 4 && head[0] == 0 && head[1] == 0 && (head[2] == 8) && (head[3] == 1 || head[3] == 3) { return "an already unpacked IDX file" }
        let printable = head.allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || (32..<127).contains($0) }
        if printable { return "plain text" }
        return "binary data of an unknown kind"
    }
}

/// What a path is, in words, from `stat` (following links) and the errno of a failed call.
public enum FileCheck {
    /// Throws `.notRegularFile` or `.unreadable` (with a precise reason) unless `path` is a
    /// regular file, or a link to one.
    public static func requireRegularFile(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw DataError.unreadable(path: path, reason: reason(errno: errno)) }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG else { throw DataError.notRegularFile(path: path, kind: describe(mode: kind)) }
    }

    /// The file type of a `st_mode & S_IFMT` value, in words.
    public static func describe(mode: mode_t) -> String {
        switch mode {
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFLNK: return "a symbolic link"
        default: return "not a regular file"
        }
    }

    /// Why a path could not be opened or examined, precise where a bare "no such file" would
    /// mislead.
    public static func reason(errno e: Int32) -> String {
        switch e {
        case ENOENT: return "it does not exist"
        case ELOOP: return "it is a loop of symbolic links"
        case ENOTDIR: return "a component of its path is a file, not a folder"
        case EACCES: return "permission denied"
        case ENAMETOOLONG: return "the name is too long"
        default: return String(cString: strerror(e))
        }
    }
}
