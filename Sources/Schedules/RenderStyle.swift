import Foundation

/// What every renderer draws the same way: the colour of each action kind,
/// the short label inside a box, and how a time is written.
///
/// One place for these so an SVG, a Chrome trace and a terminal picture of the
/// same timeline agree with each other and with the legend.
public enum RenderStyle {
    /// Fill colour of an action: four well-separated hues (blue, amber, green,
    /// purple) so a lighter later chunk of one kind is not mistaken for another
    /// kind; `W*` darker than a single `W`, so the concatenated p2 at the end of
    /// a 2BP step stands out.
    static func colour(of action: Action) -> RGB {
        switch action.kind {
        case .forward: return RGB(0x3B, 0x6F, 0xB6)
        case .backwardInput: return RGB(0xE0, 0x9B, 0x2D)
        case .backwardWeight: return action.microBatch == nil ? RGB(0x3F, 0x7A, 0x2E) : RGB(0x7C, 0xB3, 0x5E)
        case .backwardFull: return RGB(0x8E, 0x5C, 0xC7)
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: return RGB(0x88, 0x88, 0x88)
        }
    }

    /// How much later chunks are washed towards white, per chunk: enough to
    /// tell chunks apart, little enough that the kind's hue stays recognisable.
    static let chunkLightening = 0.5

    /// Colour of `action` on a rank with `chunks` chunks: chunk 0 full, later chunks lighter.
    static func colour(of action: Action, chunks: Int) -> RGB {
        let base = colour(of: action)
        guard chunks > 1 else { return base }
        return base.mixed(withWhite: chunkLightening * Double(action.chunk) / Double(chunks - 1))
    }

    /// The legend's names for the kinds a timeline contains, in a fixed order.
    static func legend(for events: [TimelineEvent]) -> [(name: String, colour: RGB)] {
        let present = Set(events.map { LegendEntry($0.action) })
        return LegendEntry.allCases.filter(present.contains).map { ($0.name, colour(of: $0.sample)) }
    }

    /// The text inside a box: the micro-batch, or `*` for the concatenated p2.
    static func boxLabel(of action: Action) -> String {
        action.microBatch.map(String.init) ?? "*"
    }

    /// Largest unit in which `seconds` is at least 1, so axis labels stay short.
    static func unit(for seconds: Double) -> (name: String, scale: Double) {
        if seconds >= 1 { return ("s", 1) }
        if seconds >= 1e-3 { return ("ms", 1e3) }
        return ("µs", 1e6)
    }

    /// `seconds` in `unit`, with at most three significant decimals and no trailing zeros.
    static func format(_ seconds: Double, unit: (name: String, scale: Double)) -> String {
        number(seconds * unit.scale) + " " + unit.name
    }

    static func number(_ value: Double) -> String {
        var text = String(format: "%.3f", value)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text == "-0" ? "0" : text
    }

    static func percent(_ ratio: Double) -> String {
        String(format: "%.1f%%", ratio * 100)
    }

    /// Bytes in the largest binary unit that keeps the number at least 1.
    public static func bytes(_ count: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count), index = 0
        while abs(value) >= 1024, index < units.count - 1 {
            value /= 1024
            index += 1
        }
        return index == 0 ? "\(count) B" : String(format: "%.1f", value) + " " + units[index]
    }

    /// Tick spacing of 1, 2 or 5 times a power of ten giving at most about
    /// `count` ticks over `span`: round numbers a reader can add up.
    static func tickStep(span: Double, count: Int) -> Double {
        guard span > 0, count > 0 else { return 1 }
        let raw = span / Double(count)
        let magnitude = pow(10, floor(log10(raw)))
        return [1, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
    }
}

/// The rows of a legend: each kind once, `W*` apart from `W`.
enum LegendEntry: CaseIterable, Hashable {
    case forward, backwardInput, backwardWeight, concatenatedWeight, backwardFull, communication

    init(_ action: Action) {
        switch action.kind {
        case .forward: self = .forward
        case .backwardInput: self = .backwardInput
        case .backwardWeight: self = action.microBatch == nil ? .concatenatedWeight : .backwardWeight
        case .backwardFull: self = .backwardFull
        case .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: self = .communication
        }
    }

    var name: String {
        switch self {
        case .forward: return "F forward"
        case .backwardInput: return "I backward-p1"
        case .backwardWeight: return "W backward-p2"
        case .concatenatedWeight: return "W* concatenated p2"
        case .backwardFull: return "B fused backward"
        case .communication: return "transfer"
        }
    }

    /// An action of this entry, to look its colour up with.
    var sample: Action {
        switch self {
        case .forward: return Action(.forward, 0)
        case .backwardInput: return Action(.backwardInput, 0)
        case .backwardWeight: return Action(.backwardWeight, 0)
        case .concatenatedWeight: return Action(.backwardWeight, nil)
        case .backwardFull: return Action(.backwardFull, 0)
        case .communication: return Action(.sendActivation, 0)
        }
    }
}

/// An sRGB colour, written as `#rrggbb`.
struct RGB: Equatable {
    let red: Double, green: Double, blue: Double

    init(_ red: Int, _ green: Int, _ blue: Int) {
        self.init(red: Double(red), green: Double(green), blue: Double(blue))
    }

    private init(red: Double, green: Double, blue: Double) {
        self.red = red
        self.green = green
        self.blue = blue
    }

    /// `fraction` of the way to white.
    func mixed(withWhite fraction: Double) -> RGB {
        let white = 255.0
        return RGB(red: red + (white - red) * fraction, green: green + (white - green) * fraction,
                   blue: blue + (white - blue) * fraction)
    }

    var hex: String {
        "#" + [red, green, blue].map { String(format: "%02x", Int($0.rounded())) }.joined()
    }

    /// Black or white, whichever reads better on this colour (WCAG relative luminance).
    var textColour: String {
        func linear(_ channel: Double) -> Double {
            let value = channel / 255
            return value <= 0.03928 ? value / 12.92 : pow((value + 0.055) / 1.055, 2.4)
        }
        let luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
        return luminance > 0.179 ? "#000000" : "#ffffff"
    }
}
