import Foundation

/// A timeline in the Chrome trace event format ("traceEvents", complete
/// events with `ph: "X"`, times in microseconds), which chrome://tracing and
/// Perfetto open directly and which allows zooming into a long step.
///
/// Each panel is a process (pid), each rank a thread (tid) named `rank r`;
/// transfers go on a second thread per rank (`rank r transfers`), because the
/// format expects events on one thread to nest, and a transfer overlaps the
/// compute it runs beside.
public enum ChromeTrace {
    public static func render(_ timeline: Timeline, name: String) throws -> String {
        try render([TimelinePanel(label: name, timeline: timeline)])
    }

    public static func render(_ panels: [TimelinePanel]) throws -> String {
        var events: [TraceEvent] = []
        for (pid, panel) in panels.enumerated() {
            let timeline = panel.timeline
            events.append(.metadata("process_name", pid: pid, tid: nil, name: panel.label))
            events.append(.metadata("process_sort_index", pid: pid, tid: nil, index: pid))
            for rank in 0..<timeline.ranks {
                events.append(.metadata("thread_name", pid: pid, tid: rank, name: "rank \(rank)"))
                events.append(.metadata("thread_sort_index", pid: pid, tid: rank, index: 2 * rank))
            }
            let transferRanks = Set(timeline.events.filter(\.action.kind.isCommunication).map(\.rank))
            for rank in transferRanks.sorted() {
                let tid = transferThread(rank: rank, ranks: timeline.ranks)
                events.append(.metadata("thread_name", pid: pid, tid: tid, name: "rank \(rank) transfers"))
                events.append(.metadata("thread_sort_index", pid: pid, tid: tid, index: 2 * rank + 1))
            }
            let origin = timeline.startTime
            for event in timeline.events {
                let tid = event.action.kind.isCommunication ? transferThread(rank: event.rank, ranks: timeline.ranks) : event.rank
                var args: [String: TraceValue] = ["chunk": .int(event.action.chunk)]
                if let microBatch = event.action.microBatch { args["microBatch"] = .int(microBatch) }
                events.append(TraceEvent(name: event.action.description, cat: event.action.kind.rawValue, ph: "X",
                                         ts: (event.start - origin) * microsecondsPerSecond,
                                         dur: event.duration * microsecondsPerSecond, pid: pid, tid: tid, args: args))
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(TraceFile(traceEvents: events, displayTimeUnit: "ms"))
        return String(decoding: data, as: UTF8.self)
    }

    static let microsecondsPerSecond = 1e6

    /// Transfer threads come after all compute threads, so rank ids stay thread ids.
    private static func transferThread(rank: Int, ranks: Int) -> Int { ranks + rank }
}

private struct TraceFile: Encodable {
    let traceEvents: [TraceEvent]
    let displayTimeUnit: String
}

/// One entry of "traceEvents"; nil fields are left out of the JSON.
private struct TraceEvent: Encodable {
    var name: String
    var cat: String?
    var ph: String
    var ts: Double?
    var dur: Double?
    var pid: Int
    var tid: Int?
    var args: [String: TraceValue]?

    /// A `ph: "M"` metadata event naming or ordering a process or thread.
    static func metadata(_ kind: String, pid: Int, tid: Int?, name: String) -> TraceEvent {
        TraceEvent(name: kind, cat: nil, ph: "M", ts: nil, dur: nil, pid: pid, tid: tid, args: ["name": .string(name)])
    }

    static func metadata(_ kind: String, pid: Int, tid: Int?, index: Int) -> TraceEvent {
        TraceEvent(name: kind, cat: nil, ph: "M", ts: nil, dur: nil, pid: pid, tid: tid, args: ["sort_index": .int(index)])
    }
}

private enum TraceValue: Encodable {
    case int(Int)
    case string(String)

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .int(value): try container.encode(value)
        case let .string(value): try container.encode(value)
        }
    }
}
