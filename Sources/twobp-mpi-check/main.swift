// twobp-mpi-check: exercises MPITransport under mpirun, for Tests/PipelineTests/MPI*Tests.swift
// and by hand (scripts/mpi-run.sh -np 2 .build/debug/twobp-mpi-check pingpong).
//
//   mpirun -np 2 twobp-mpi-check pingpong [--steps N]        tensors of many shapes around a ring, values checked
//   mpirun -np 2 twobp-mpi-check threads [--messages N]      sends on one thread, receives on another
//   mpirun -np 2 twobp-mpi-check collectives                  allReduceSum and gather, values checked
//   mpirun -np 2 twobp-mpi-check mismatch                     wrong-sized messages become TwoBPErrors (rank 0 checks)
//   mpirun -np 2 twobp-mpi-check kill [--victim R] [--after S]    rank R SIGKILLs itself mid-exchange
//   mpirun -np 2 twobp-mpi-check fail [--victim R] [--after S]    rank R calls Transport.fail
//   mpirun -np 2 twobp-mpi-check timeout [--timeout S]        rank 0 waits for a message rank 1 never sends
//   mpirun -np 2 twobp-mpi-check busy --peer-timeout S [--busy T]   rank 1 computes T s (default 3 S) before it sends: no abort
//   mpirun -np 2 twobp-mpi-check silent --peer-timeout S [--victim R]  rank R stops (SIGSTOP): the watchdog aborts naming it
//   mpirun -np 2 twobp-mpi-check bench [--sizes 4096,65536] [--repetitions N]   JSON on stdout (rank 0)
//
// Every rank that passes prints "rank R: <mode> ok ..." on stdout; a failure goes through
// Transport.fail, so the job exits non-zero with a message naming the rank.

import Benchmarks
import Foundation
import Pipeline
import Tensor

struct Arguments {
    var mode = ""
    var options: [String: String] = [:]

    init(_ arguments: [String]) throws {
        var rest = arguments[...]
        guard let mode = rest.popFirst() else { throw TwoBPError("usage: twobp-mpi-check <mode> [--option value]...") }
        self.mode = mode
        while let name = rest.popFirst() {
            guard name.hasPrefix("--"), let value = rest.popFirst() else {
                throw TwoBPError("expected --option value, got \(name)")
            }
            options[String(name.dropFirst(2))] = value
        }
    }

    func integer(_ name: String, default value: Int) throws -> Int {
        guard let text = options[name] else { return value }
        guard let number = Int(text) else { throw TwoBPError("--\(name) needs an integer, got \(text)") }
        return number
    }

    func seconds(_ name: String, default value: Double) throws -> Double {
        guard let text = options[name] else { return value }
        guard let number = Double(text), number > 0 else { throw TwoBPError("--\(name) needs seconds, got \(text)") }
        return number
    }
}

func say(_ line: String) {
    print(line)
    fflush(stdout)
}

/// Shapes from a scalar and an empty tensor to a 16 MiB activation.
let shapes: [[Int]] = [
    [], [0], [1], [7], [3, 5], [2, 3, 4], [1, 1024], [16, 1024], [4, 256, 64], [1, 1024, 1024], [2, 1024, 2048],
]

/// The value element `index` of the message carries: distinct per sender, step and shape, exact in Float32.
func pattern(source: Int, step: Int, shapeIndex: Int, index: Int) -> Float {
    Float(source * 4096 + step * 64 + shapeIndex) + Float(index % 1021) * 0.25
}

func filled(_ shape: [Int], source: Int, step: Int, shapeIndex: Int) -> Tensor {
    let tensor = Tensor(zeros: shape)
    for index in 0..<tensor.count {
        tensor[index] = pattern(source: source, step: step, shapeIndex: shapeIndex, index: index)
    }
    return tensor
}

func verify(_ tensor: Tensor, _ shape: [Int], source: Int, step: Int, shapeIndex: Int, what: String, rank: Int) throws {
    guard tensor.shape == shape else {
        throw TwoBPError("rank \(rank): \(what) has shape \(tensor.shape), expected \(shape)")
    }
    for index in 0..<tensor.count {
        let expected = pattern(source: source, step: step, shapeIndex: shapeIndex, index: index)
        guard tensor[index] == expected else {
            throw TwoBPError("rank \(rank): \(what) element \(index) is \(tensor[index]), expected \(expected)")
        }
    }
}

/// One step of the ring: every rank sends each shape forward (an activation for the next
/// rank) and backward (a gradient for the previous one), having announced half of the
/// receives with `expect`, and takes them in reverse order, checking every value.
func ringStep(_ transport: MPITransport, step: Int, shapeIndices: [Int], stopBeforeReceiving: (() -> Void)? = nil) throws {
    let rank = transport.rank
    let next = (rank + 1) % transport.worldSize
    let previous = (rank + transport.worldSize - 1) % transport.worldSize
    func activation(_ k: Int, for stage: Int) -> MessageTag { MessageTag(kind: .activation, microBatch: k, stage: stage) }
    func gradient(_ k: Int, for stage: Int) -> MessageTag { MessageTag(kind: .gradient, microBatch: k, stage: stage) }
    for k in shapeIndices where k % 2 == 0 {
        transport.expect(from: previous, tag: activation(k, for: rank), shape: shapes[k])
        transport.expect(from: next, tag: gradient(k, for: rank), shape: shapes[k])
    }
    for k in shapeIndices {
        try transport.send(filled(shapes[k], source: rank, step: step, shapeIndex: k), to: next, tag: activation(k, for: next))
        try transport.send(filled(shapes[k], source: rank, step: step, shapeIndex: k), to: previous, tag: gradient(k, for: previous))
    }
    stopBeforeReceiving?()
    for k in shapeIndices.reversed() {
        let forward = try transport.receive(from: previous, tag: activation(k, for: rank), shape: shapes[k])
        try verify(forward, shapes[k], source: previous, step: step, shapeIndex: k,
                   what: "\(activation(k, for: rank)) from rank \(previous)", rank: rank)
        let backward = try transport.receive(from: next, tag: gradient(k, for: rank), shape: shapes[k])
        try verify(backward, shapes[k], source: next, step: step, shapeIndex: k,
                   what: "\(gradient(k, for: rank)) from rank \(next)", rank: rank)
    }
}

func pingPong(_ transport: MPITransport, _ arguments: Arguments) throws {
    let steps = try arguments.integer("steps", default: 3)
    var allocatedAfterFirstStep = 0
    for step in 0..<steps {
        try ringStep(transport, step: step, shapeIndices: Array(shapes.indices))
        if step == 0 { allocatedAfterFirstStep = transport.statistics.buffersAllocated }
    }
    try transport.waitForSends()
    let statistics = transport.statistics
    // Received tensors are dropped at the end of each step, so later steps must reuse them.
    guard statistics.buffersAllocated == allocatedAfterFirstStep else {
        throw TwoBPError("rank \(transport.rank): receive buffers were reallocated: \(allocatedAfterFirstStep) "
            + "after step 0, \(statistics.buffersAllocated) after step \(steps - 1)")
    }
    let expectedMessages = steps * shapes.count * 2
    guard statistics.messagesReceived == expectedMessages, statistics.messagesSent == expectedMessages else {
        throw TwoBPError("rank \(transport.rank): counted \(statistics.messagesSent) sends and "
            + "\(statistics.messagesReceived) receives, expected \(expectedMessages) each")
    }
    // Every received tensor is gone now: the pool's buffers are idle, and releasing them frees them.
    let idle = transport.idleBufferBytes
    let live = MemoryMeter.process.liveBytes
    transport.releaseIdleBuffers()
    guard idle > 0, transport.idleBufferBytes == 0, MemoryMeter.process.liveBytes == live - idle else {
        throw TwoBPError("rank \(transport.rank): releasing \(idle) idle buffer bytes left \(transport.idleBufferBytes) idle "
            + "and moved live bytes from \(live) to \(MemoryMeter.process.liveBytes)")
    }
    say("rank \(transport.rank): pingpong ok: \(statistics.messagesReceived) messages, \(shapes.count) shapes, "
        + "\(steps) steps, \(statistics.bytesReceived) bytes received, buffers allocated "
        + "\(statistics.buffersAllocated) reused \(statistics.buffersReused), \(transport.environment.threadLevel), "
        + "tag bound \(transport.tagUpperBound)")
}

/// The first error any thread records.
final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var first: Error?

    func record(_ error: Error) { lock.withLock { first = first ?? error } }
    var error: Error? { lock.withLock { first } }
}

/// Sends from a second thread while the main thread receives: the transport must serialize
/// its MPI calls itself (MPI_THREAD_SERIALIZED), and the stage need not run on the main thread.
func threads(_ transport: MPITransport, _ arguments: Arguments) throws {
    let rank = transport.rank
    let next = (rank + 1) % transport.worldSize
    let previous = (rank + transport.worldSize - 1) % transport.worldSize
    let messages = try arguments.integer("messages", default: 200)
    let shape = [4, 1024]
    let tags = (0..<messages).map { MessageTag(kind: .activation, microBatch: $0, stage: rank) }
    let failure = FirstError()
    let finished = DispatchGroup()
    let sender = Thread {
        defer { finished.leave() }
        do {
            for index in 0..<messages {
                let tag = MessageTag(kind: .activation, microBatch: index, stage: next)
                try transport.send(filled(shape, source: rank, step: index, shapeIndex: 0), to: next, tag: tag)
            }
            try transport.waitForSends()
        } catch { failure.record(error) }
    }
    let receiver = Thread {
        defer { finished.leave() }
        do {
            for (index, tag) in tags.enumerated() {
                if index + 1 < messages { transport.expect(from: previous, tag: tags[index + 1], shape: shape) }
                let tensor = try transport.receive(from: previous, tag: tag, shape: shape)
                try verify(tensor, shape, source: previous, step: index, shapeIndex: 0, what: "\(tag)", rank: rank)
            }
        } catch { failure.record(error) }
    }
    for thread in [sender, receiver] {
        finished.enter()
        thread.start()
    }
    finished.wait()
    if let error = failure.error { throw error }
    say("rank \(rank): threads ok: \(messages) messages sent and received on two threads")
}

func collectives(_ transport: MPITransport) throws {
    let rank = transport.rank
    let size = transport.worldSize
    let sums = try transport.allReduceSum([Double(rank), 1, Double(rank * rank), 0.5])
    let expected = [Double(size * (size - 1) / 2), Double(size), Double((0..<size).map { $0 * $0 }.reduce(0, +)), 0.5 * Double(size)]
    guard sums == expected else { throw TwoBPError("rank \(rank): allReduceSum gave \(sums), expected \(expected)") }
    guard try transport.allReduceSum([]) == [] else { throw TwoBPError("rank \(rank): allReduceSum of nothing is not empty") }

    // Rank r sends r bytes of value r (rank 0 sends none), to the first and to the last rank.
    func bytes(of rank: Int) -> [UInt8] { [UInt8](repeating: UInt8(rank), count: rank * 1000) }
    for root in Set([0, size - 1]).sorted() {
        let gathered = try transport.gather(bytes(of: rank), root: root)
        if rank == root {
            guard let gathered, gathered == (0..<size).map(bytes(of:)) else {
                throw TwoBPError("rank \(rank): gather to \(root) gave sizes \(gathered?.map(\.count) ?? []), "
                    + "expected \((0..<size).map { bytes(of: $0).count })")
            }
        } else if gathered != nil {
            throw TwoBPError("rank \(rank): gather to rank \(root) returned bytes on a rank that is not the root")
        }
    }
    say("rank \(rank): collectives ok")
}

/// Rank 1 sends messages one float short and one float long of what rank 0 expects; rank 0
/// must get a TwoBPError naming both ranks for each, and the transport must keep working.
func mismatch(_ transport: MPITransport) throws {
    let rank = transport.rank
    let tagShort = MessageTag(kind: .activation, microBatch: 0, stage: 0)
    let tagLong = MessageTag(kind: .activation, microBatch: 1, stage: 0)
    let tagGood = MessageTag(kind: .activation, microBatch: 2, stage: 0)
    if rank == 1 {
        try transport.send(filled([3], source: 1, step: 0, shapeIndex: 0), to: 0, tag: tagShort)
        try transport.send(filled([5], source: 1, step: 0, shapeIndex: 0), to: 0, tag: tagLong)
        try transport.send(filled([4], source: 1, step: 0, shapeIndex: 0), to: 0, tag: tagGood)
    }
    if rank == 0 {
        var messages: [String] = []
        for tag in [tagShort, tagLong] {
            do {
                _ = try transport.receive(from: 1, tag: tag, shape: [4])
                throw TwoBPError("rank 0: a wrong-sized \(tag) from rank 1 was accepted")
            } catch let error as TwoBPError where error.message.contains("from rank 1") && error.message.hasPrefix("rank 0:") {
                messages.append(error.message)
            }
        }
        let good = try transport.receive(from: 1, tag: tagGood, shape: [4])
        try verify(good, [4], source: 1, step: 0, shapeIndex: 0, what: "\(tagGood)", rank: 0)
        for message in messages { say("rank 0: error as expected: \(message)") }
    }
    try transport.waitForSends()
    try transport.barrier()
    say("rank \(rank): mismatch ok")
}

/// A ring exchange in which `--victim` stops at step `--after`, half way through: its sends
/// have gone out, its receives have not happened, and every other rank is blocked on it.
func injectFailure(_ transport: MPITransport, _ arguments: Arguments, kill: Bool) throws {
    let victim = try arguments.integer("victim", default: transport.worldSize - 1)
    let after = try arguments.integer("after", default: 2)
    guard (0..<transport.worldSize).contains(victim) else {
        throw TwoBPError("--victim \(victim) is not a rank of this \(transport.worldSize)-rank job")
    }
    for step in 0...after {
        try ringStep(transport, step: step, shapeIndices: [2, 7, 9]) {
            guard step == after, transport.rank == victim else { return }
            if kill {
                FileHandle.standardError.write(Data("rank \(victim): raising SIGKILL at step \(step)\n".utf8))
                raise(SIGKILL)
            }
            transport.fail("injected failure at step \(step)")
        }
    }
    // Ranks that do not talk to the victim directly wait for it here.
    _ = try transport.allReduceSum([1])
    throw TwoBPError("rank \(transport.rank): the exchange outlived the failure of rank \(victim)")
}

/// Rank 0 waits (with `--timeout`) for a message rank 1 never sends; rank 1 waits for one
/// rank 0 never sends, with the default timeout, so only rank 0's timeout can end the job.
func timeout(_ transport: MPITransport) throws {
    let peer = transport.rank == 0 ? 1 : 0
    let tag = MessageTag(kind: .activation, microBatch: 0, stage: transport.rank)
    _ = try transport.receive(from: peer, tag: tag, shape: [8])
    throw TwoBPError("rank \(transport.rank): received a message nobody sent")
}

/// Rank 1 is busy (the main thread sleeps, as a long computation holds it) for longer than the
/// peer timeout before it sends rank 0 a message: the watchdog must tell busy from gone.
func busy(_ transport: MPITransport, _ arguments: Arguments) throws {
    let peerTimeout = transport.options.peerTimeout ?? 1
    let seconds = try arguments.seconds("busy", default: 3 * peerTimeout)
    let tag = MessageTag(kind: .activation, microBatch: 0, stage: 0)
    if transport.rank == 1 {
        Thread.sleep(forTimeInterval: seconds)
        try transport.send(filled([8], source: 1, step: 0, shapeIndex: 0), to: 0, tag: tag)
    } else if transport.rank == 0 {
        let tensor = try transport.receive(from: 1, tag: tag, shape: [8])
        try verify(tensor, [8], source: 1, step: 0, shapeIndex: 0, what: "\(tag)", rank: 0)
    }
    try transport.waitForSends()
    try transport.barrier()
    say("rank \(transport.rank): busy ok: \(seconds) s of work on rank 1 with a \(peerTimeout) s peer timeout")
}

/// `--victim` stops itself (SIGSTOP: every thread, heartbeats included) while the others wait for it.
func silent(_ transport: MPITransport, _ arguments: Arguments) throws {
    let victim = try arguments.integer("victim", default: 1)
    if transport.rank == victim {
        FileHandle.standardError.write(Data("rank \(victim): stopping with SIGSTOP\n".utf8))
        raise(SIGSTOP)
    }
    try transport.barrier()
    throw TwoBPError("rank \(transport.rank): the barrier completed although rank \(victim) is stopped")
}

func bench(_ transport: MPITransport, _ arguments: Arguments) throws {
    var configuration = TransportBenchmarkConfiguration()
    if let sizes = arguments.options["sizes"] {
        configuration.sizes = try sizes.split(separator: ",").map {
            guard let bytes = Int($0) else { throw TwoBPError("--sizes needs comma-separated byte counts, got \(sizes)") }
            return bytes
        }
    }
    configuration.repetitions = try arguments.integer("repetitions", default: configuration.repetitions)
    configuration.maxIterations = try arguments.integer("max-iterations", default: configuration.maxIterations)
    configuration.minIterations = min(configuration.minIterations, configuration.maxIterations)
    guard let result = try MPITransportBenchmark.run(transport: transport, configuration: configuration) else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    say(String(decoding: try encoder.encode(result), as: UTF8.self))
    FileHandle.standardError.write(Data((result.table + "\n").utf8))
}

let arguments: Arguments
do {
    arguments = try Arguments(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("twobp-mpi-check: \(error)\n".utf8))
    exit(2)
}
guard MPIEnvironment.isLaunchedByMPI else {
    FileHandle.standardError.write(Data("twobp-mpi-check: run me under mpirun (no launcher variables such as OMPI_COMM_WORLD_SIZE are set)\n".utf8))
    exit(2)
}

let environment: MPIEnvironment
do {
    environment = try MPIEnvironment.initialize()
} catch {
    FileHandle.standardError.write(Data("twobp-mpi-check: \(error)\n".utf8))
    exit(1)
}
do {
    // The timeout mode shortens rank 0's wait only; every other wait keeps the default.
    var options = MPITransport.Options()
    if arguments.mode != "timeout" || environment.rank == 0 {
        options.timeout = try arguments.seconds("timeout", default: options.timeout)
    }
    options.spinTime = try arguments.seconds("spin-time", default: options.spinTime)
    options.maxPollInterval = try arguments.seconds("max-poll-interval", default: options.maxPollInterval)
    if arguments.options["peer-timeout"] != nil { options.peerTimeout = try arguments.seconds("peer-timeout", default: 1) }
    let transport = try MPITransport(environment: environment, options: options)
    guard environment.worldSize >= 2 else { throw TwoBPError("twobp-mpi-check needs at least 2 ranks") }
    switch arguments.mode {
    case "pingpong": try pingPong(transport, arguments)
    case "threads": try threads(transport, arguments)
    case "collectives": try collectives(transport)
    case "mismatch": try mismatch(transport)
    case "kill": try injectFailure(transport, arguments, kill: true)
    case "fail": try injectFailure(transport, arguments, kill: false)
    case "timeout": try timeout(transport)
    case "busy": try busy(transport, arguments)
    case "silent": try silent(transport, arguments)
    case "bench": try bench(transport, arguments)
    default: throw TwoBPError("unknown mode \(arguments.mode)")
    }
    try environment.finalize()
} catch {
    environment.abort("\(error)")
}
