import Foundation
import Tensor

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Small POSIX file helpers with TwoBPError messages: unbuffered writes that
/// survive partial writes and EINTR, fsync of files and folders, and reads that
/// say which file is missing.
public enum FileIO {
    /// Calls `body` with a sink writing a new file, then fsyncs it and renames it
    /// to `url`: readers see the old file or the complete new one, never a torn
    /// one, and a memory-mapped old file stays valid (it is never truncated).
    public static func writeDurably(_ url: URL, _ body: (FileSink) throws -> Void) throws {
        let temporary = url.deletingLastPathComponent().appendingPathComponent("." + url.lastPathComponent + ".partial")
        let sink = try FileSink(url: temporary, append: false)
        do {
            try body(sink)
            try sink.sync()
            try sink.close()
            try rename(temporary, to: url)
        } catch {
            try? sink.close()
            try? remove(temporary)
            throw error
        }
    }

    public static func writeDurably(_ url: URL, bytes: [UInt8]) throws {
        try writeDurably(url) { sink in try bytes.withUnsafeBytes { try sink.write($0) } }
    }

    public static func writeDurably(_ url: URL, text: String) throws {
        try writeDurably(url, bytes: Array(text.utf8))
    }

    /// Writes a user-named output file (`--summary`, `--json`, `--svg`, `--timeline`, metrics):
    /// a new path or a regular file is replaced atomically (`writeDurably`); a FIFO, a device
    /// or a symbolic link is written through, as a shell redirection would, so the reader, the
    /// device or the link's target gets the bytes and the path stays what it was; a folder is refused.
    public static func writeOutput(_ url: URL, what: String = "output", bytes: [UInt8]) throws {
        switch try outputKind(url, what: what) {
        case .replaceable:
            try writeDurably(url, bytes: bytes)
        case .writeThrough:
            let sink = try FileSink(url: url, append: false, what: what)
            try bytes.withUnsafeBytes { try sink.write($0) }
            try sink.close()
        }
    }

    public static func writeOutput(_ url: URL, what: String = "output", text: String) throws {
        try writeOutput(url, what: what, bytes: Array(text.utf8))
    }

    public static func writeOutput(_ url: URL, what: String = "output", data: Data) throws {
        try writeOutput(url, what: what, bytes: [UInt8](data))
    }

    public enum OutputKind {
        /// Nothing there, or a regular file: write a new file and rename it over the path.
        case replaceable
        /// A FIFO, device, socket or symbolic link: open the path itself and write into it.
        case writeThrough
    }

    /// How `writeOutput` treats `url`, checked before any work so a bad output path is found
    /// at the start of a run: a folder, a missing or unwritable parent folder is a `TwoBPError`.
    @discardableResult
    public static func outputKind(_ url: URL, what: String = "output") throws -> OutputKind {
        var status = stat()
        if lstat(url.path, &status) == 0 {
            switch status.st_mode & S_IFMT {
            case S_IFDIR:
                throw TwoBPError("\(what) \(url.path) is a folder; name a file")
            case S_IFREG:
                break
            default:
                guard access(url.path, W_OK) == 0 else { throw TwoBPError("cannot write \(what) \(url.path): \(errnoText())") }
                return .writeThrough
            }
        }
        let parent = url.deletingLastPathComponent()
        var parentStatus = stat()
        guard stat(parent.path, &parentStatus) == 0 else {
            throw TwoBPError("cannot write \(what) \(url.path): folder \(parent.path) does not exist")
        }
        guard parentStatus.st_mode & S_IFMT == S_IFDIR else {
            throw TwoBPError("cannot write \(what) \(url.path): \(parent.path) is not a folder")
        }
        guard access(parent.path, W_OK) == 0 else {
            throw TwoBPError("cannot write \(what) \(url.path): folder \(parent.path) is not writable (\(errnoText()))")
        }
        return .replaceable
    }

    /// Flushes a folder's entries (new files, renames) to disk.
    public static func syncDirectory(_ url: URL) throws {
        let fd = open(url.path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw TwoBPError("cannot open folder \(url.path) to sync it: \(errnoText())") }
        defer { _ = close(fd) }
        guard fsync(fd) == 0 else { throw TwoBPError("cannot sync folder \(url.path): \(errnoText())") }
    }

    /// The whole file, memory-mapped where the platform allows.
    public static func read(_ url: URL, what: String = "file") throws -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw TwoBPError("\(what) \(url.path) not found")
        }
        guard !isDirectory.boolValue else { throw TwoBPError("\(what) \(url.path) is a folder, not a file") }
        // A device or FIFO would read as empty, forever, or fail with a misleading permission error.
        var status = stat()
        if stat(url.path, &status) == 0, status.st_mode & S_IFMT != S_IFREG {
            throw TwoBPError("\(what) \(url.path) is \(describeKind(status.st_mode)), not a regular file; name a file")
        }
        do {
            return try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            throw TwoBPError("cannot read \(what) \(url.path): \(error.localizedDescription)")
        }
    }

    public static func exists(_ url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.path)
    }

    public static func isDirectory(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    public static func isFile(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    /// A regular file itself, not a link to one, a FIFO or a device.
    public static func isRegularFile(_ url: URL) -> Bool {
        var status = stat()
        return lstat(url.path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
    }

    /// Creates `url` and any missing parents; the error names the part that is in the way
    /// (a file where a folder should be, an unwritable parent) with the system's reason.
    public static func createDirectory(_ url: URL) throws {
        var path = ""
        for component in url.standardizedFileURL.pathComponents {
            path = component == "/" ? "/" : (path == "/" ? "/" : path + "/") + component
            var status = stat()
            if stat(path, &status) == 0 {
                guard status.st_mode & S_IFMT == S_IFDIR else {
                    throw TwoBPError("cannot create folder \(url.path): \(path) is \(describeKind(status.st_mode)), not a folder")
                }
                continue
            }
            guard mkdir(path, 0o755) == 0 || errno == EEXIST else {
                throw TwoBPError("cannot create folder \(url.path): \(path): \(errnoText())")
            }
        }
    }

    public static func remove(_ url: URL) throws {
        guard FileManager.default.fileExists(atPath: url.path) else { return }
        do {
            try FileManager.default.removeItem(at: url)
        } catch {
            throw TwoBPError("cannot remove \(url.path): \(error.localizedDescription)")
        }
    }

    /// Atomically renames `source` to `destination` (same file system); an existing
    /// empty folder or a file at `destination` is replaced.
    public static func rename(_ source: URL, to destination: URL) throws {
        guard Foundation.rename(source.path, destination.path) == 0 else {
            throw TwoBPError("cannot rename \(source.path) to \(destination.path): \(errnoText())")
        }
    }

    /// "a FIFO", "a character device", ... for messages.
    static func describeKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        case S_IFDIR: return "a folder"
        case S_IFREG: return "a file"
        default: return "a special file"
        }
    }

    public static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}

// File-scope wrappers: inside `FileSink` the names `write` and `close` mean its methods.
private func systemClose(_ fd: Int32) -> Int32 { close(fd) }
private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(fd, bytes, count) }

/// An open file written with raw `write(2)` calls: no buffering, so each call's
/// bytes reach the kernel before it returns.
public final class FileSink {
    public let url: URL
    /// What the file is for messages, e.g. "--summary".
    private let what: String
    private var fd: Int32

    public init(url: URL, append: Bool, what: String? = nil) throws {
        self.url = url
        self.what = what.map { $0 + " " } ?? ""
        let flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC)
        fd = open(url.path, flags, 0o644)
        guard fd >= 0 else { throw TwoBPError("cannot write \(self.what)\(url.path): \(FileIO.errnoText())") }
    }

    deinit {
        if fd >= 0 { _ = systemClose(fd) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard var base = bytes.baseAddress else { return }
        var remaining = bytes.count
        while remaining > 0 {
            let written = systemWrite(fd, base, remaining)
            if written < 0 {
                if errno == EINTR { continue }
                throw TwoBPError("cannot write \(what)\(url.path): \(FileIO.errnoText())")
            }
            remaining -= written
            base += written
        }
    }

    public func write(_ text: String) throws {
        var text = text
        try text.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    public func sync() throws {
        guard fsync(fd) == 0 else { throw TwoBPError("cannot sync \(what)\(url.path): \(FileIO.errnoText())") }
    }

    public func close() throws {
        guard fd >= 0 else { return }
        let result = systemClose(fd)
        fd = -1
        guard result == 0 else { throw TwoBPError("cannot close \(url.path): \(FileIO.errnoText())") }
    }
}
