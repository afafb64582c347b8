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

    public static func createDirectory(_ url: URL) throws {
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw TwoBPError("cannot create folder \(url.path): \(error.localizedDescription)")
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
    private var fd: Int32

    public init(url: URL, append: Bool) throws {
        self.url = url
        let flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC)
        fd = open(url.path, flags, 0o644)
        guard fd >= 0 else { throw TwoBPError("cannot write \(url.path): \(FileIO.errnoText())") }
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
                throw TwoBPError("cannot write \(url.path): \(FileIO.errnoText())")
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
        guard fsync(fd) == 0 else { throw TwoBPError("cannot sync \(url.path): \(FileIO.errnoText())") }
    }

    public func close() throws {
        guard fd >= 0 else { return }
        let result = systemClose(fd)
        fd = -1
        guard result == 0 else { throw TwoBPError("cannot close \(url.path): \(FileIO.errnoText())") }
    }
}
