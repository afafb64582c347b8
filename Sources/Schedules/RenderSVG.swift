/// A timeline drawn as it is usually pictured in pipeline papers: one row per
/// rank, one coloured box per action with its micro-batch inside, time to the
/// right. Stacking puts several timelines (measured over simulated, or one
/// schedule with and without 2BP) on one time axis so their lengths compare
/// by eye.
public struct TimelinePanel: Sendable {
    public var label: String
    public var timeline: Timeline

    public init(label: String, timeline: Timeline) {
        self.label = label
        self.timeline = timeline
    }
}

public enum TimelineSVG {
    /// One timeline; the title line adds step time and mean bubble ratio to `title`.
    public static func render(_ timeline: Timeline, title: String, plotWidth: Double = SVGLayout.defaultPlotWidth) -> String {
        SVGDocument(panels: [TimelinePanel(label: title, timeline: timeline)], title: nil, plotWidth: plotWidth).text
    }

    /// Several timelines one above the other on a shared time axis, each
    /// headed by its label, step time and bubble ratio.
    public static func renderStacked(_ panels: [TimelinePanel], title: String, plotWidth: Double = SVGLayout.defaultPlotWidth) -> String {
        SVGDocument(panels: panels, title: title, plotWidth: plotWidth).text
    }
}

/// Sizes in SVG user units (pixels at 100 %), named so the layout reads as arithmetic.
public enum SVGLayout {
    public static let defaultPlotWidth = 960.0
    static let margin = 16.0
    static let titleHeight = 26.0
    static let titleFontSize = 16.0
    static let panelLabelHeight = 20.0
    static let panelGap = 12.0
    static let fontSize = 12.0
    static let boxFontSize = 11.0
    /// Average glyph width of the sans-serif font at `boxFontSize`, to decide whether a label fits its box.
    static let boxGlyphWidth = 6.6
    static let boxLabelPadding = 3.0
    static let rowHeight = 22.0
    static let rowGap = 4.0
    /// Lane under a rank's row for its transfers, when the timeline has any.
    static let transferLaneHeight = 5.0
    static let rankLabelWidth = 56.0
    static let rankInfoWidth = 170.0
    static let axisHeight = 34.0
    static let tickLength = 5.0
    static let targetTickCount = 10
    static let legendHeight = 24.0
    static let legendSwatch = 12.0
    static let legendEntryWidth = 150.0
}

/// Builds the SVG text of a list of panels; one value per document.
private struct SVGDocument {
    let panels: [TimelinePanel]
    let title: String?
    let plotWidth: Double
    /// Seconds to pixels, shared by every panel so their lengths compare.
    let pixelsPerSecond: Double
    let unit: (name: String, scale: Double)
    let longestStep: Double
    var lines: [String] = []

    init(panels: [TimelinePanel], title: String?, plotWidth: Double) {
        self.panels = panels
        self.title = title
        self.plotWidth = plotWidth
        longestStep = panels.map(\.timeline.stepTime).max() ?? 0
        pixelsPerSecond = longestStep > 0 ? plotWidth / longestStep : 0
        unit = RenderStyle.unit(for: longestStep)
    }

    private typealias L = SVGLayout
    private var plotLeft: Double { L.margin + L.rankLabelWidth }
    private var width: Double { plotLeft + plotWidth + L.rankInfoWidth + L.margin }

    private static func hasTransfers(_ timeline: Timeline) -> Bool {
        timeline.events.contains { $0.action.kind.isCommunication }
    }

    private static func rowPitch(_ timeline: Timeline) -> Double {
        L.rowHeight + (hasTransfers(timeline) ? L.transferLaneHeight : 0) + L.rowGap
    }

    private static func panelHeight(_ timeline: Timeline) -> Double {
        L.panelLabelHeight + Double(timeline.ranks) * rowPitch(timeline)
    }

    var text: String {
        var document = self
        return document.build()
    }

    private mutating func build() -> String {
        let titleBlock = title == nil ? 0 : L.titleHeight
        let panelsHeight = panels.map { Self.panelHeight($0.timeline) }.reduce(0, +)
            + L.panelGap * Double(max(0, panels.count - 1))
        let height = L.margin + titleBlock + panelsHeight + L.axisHeight + L.legendHeight + L.margin
        lines.append(##"<svg xmlns="http://www.w3.org/2000/svg" width="\##(n(width))" height="\##(n(height))" viewBox="0 0 \##(n(width)) \##(n(height))" font-family="Helvetica, Arial, sans-serif" font-size="\##(n(L.fontSize))">"##)
        lines.append(##"<rect width="100%" height="100%" fill="#ffffff"/>"##)
        var top = L.margin
        if let title {
            lines.append(##"<text x="\##(n(L.margin))" y="\##(n(top + L.titleFontSize))" font-size="\##(n(L.titleFontSize))" font-weight="bold">\##(escape(title))</text>"##)
            top += titleBlock
        }
        let axisTop = top + panelsHeight
        drawGrid(top: top, bottom: axisTop)
        for (index, panel) in panels.enumerated() {
            drawPanel(panel, top: top, bold: title == nil)
            top += Self.panelHeight(panel.timeline) + (index + 1 < panels.count ? L.panelGap : 0)
        }
        drawAxis(top: axisTop)
        drawLegend(top: top + L.axisHeight)
        lines.append("</svg>")
        return lines.joined(separator: "\n") + "\n"
    }

    private mutating func drawPanel(_ panel: TimelinePanel, top: Double, bold: Bool) {
        let timeline = panel.timeline
        let header = "\(panel.label) — step \(RenderStyle.format(timeline.stepTime, unit: unit)) · bubble \(RenderStyle.percent(timeline.meanBubbleRatio))"
        let weight = bold ? ##" font-weight="bold" font-size="\##(n(L.titleFontSize - 2))""## : ""
        lines.append(##"<text x="\##(n(L.margin))" y="\##(n(top + L.panelLabelHeight - 6))"\##(weight)>\##(escape(header))</text>"##)
        let origin = timeline.startTime
        let chunks = (timeline.events.map(\.action.chunk).max() ?? 0) + 1
        let pitch = Self.rowPitch(timeline)
        let rowsTop = top + L.panelLabelHeight
        for rank in 0..<timeline.ranks {
            let y = rowsTop + Double(rank) * pitch
            let middle = y + L.rowHeight / 2
            lines.append(##"<text x="\##(n(L.margin))" y="\##(n(middle))" dominant-baseline="central">rank \##(rank)</text>"##)
            lines.append(##"<rect x="\##(n(plotLeft))" y="\##(n(y))" width="\##(n(timeline.stepTime * pixelsPerSecond))" height="\##(n(L.rowHeight))" fill="#eeeeee"/>"##)
            var info = "idle \(RenderStyle.percent(timeline.bubbleRatio(rank: rank)))"
            if let peaks = timeline.peakMemory, peaks.contains(where: { $0 > 0 }), peaks.indices.contains(rank) {
                info += " · peak \(RenderStyle.bytes(peaks[rank]))"
            }
            lines.append(##"<text x="\##(n(plotLeft + plotWidth + 8))" y="\##(n(middle))" dominant-baseline="central" fill="#444444">\##(escape(info))</text>"##)
        }
        for event in timeline.events {
            let y = rowsTop + Double(event.rank) * pitch
            drawEvent(event, origin: origin, rowTop: y, chunks: chunks)
        }
    }

    private mutating func drawEvent(_ event: TimelineEvent, origin: Double, rowTop: Double, chunks: Int) {
        let x = plotLeft + (event.start - origin) * pixelsPerSecond
        let boxWidth = event.duration * pixelsPerSecond
        let colour = RenderStyle.colour(of: event.action, chunks: chunks)
        let tooltip = "rank \(event.rank) \(event.action): \(RenderStyle.format(event.start - origin, unit: unit)) – \(RenderStyle.format(event.end - origin, unit: unit))"
        if event.action.kind.isCommunication {
            let y = rowTop + L.rowHeight
            lines.append(##"<rect x="\##(n(x))" y="\##(n(y + 1))" width="\##(n(boxWidth))" height="\##(n(L.transferLaneHeight - 2))" fill="\##(colour.hex)" fill-opacity="0.6"><title>\##(escape(tooltip))</title></rect>"##)
            return
        }
        lines.append(##"<rect x="\##(n(x))" y="\##(n(rowTop))" width="\##(n(boxWidth))" height="\##(n(L.rowHeight))" fill="\##(colour.hex)" stroke="#ffffff" stroke-width="1"><title>\##(escape(tooltip))</title></rect>"##)
        let label = RenderStyle.boxLabel(of: event.action)
        if Double(label.count) * L.boxGlyphWidth + 2 * L.boxLabelPadding <= boxWidth {
            lines.append(##"<text x="\##(n(x + boxWidth / 2))" y="\##(n(rowTop + L.rowHeight / 2))" text-anchor="middle" dominant-baseline="central" font-size="\##(n(L.boxFontSize))" fill="\##(colour.textColour)">\##(escape(label))</text>"##)
        }
    }

    /// Tick positions in seconds: round numbers from 0 to the longest step.
    private var ticks: [Double] {
        guard pixelsPerSecond > 0 else { return [0] }
        let step = RenderStyle.tickStep(span: longestStep, count: L.targetTickCount)
        return stride(from: 0, through: longestStep * (1 + 1e-9), by: step).map { $0 }
    }

    /// Faint vertical lines at the ticks, drawn first so boxes cover them.
    private mutating func drawGrid(top: Double, bottom: Double) {
        for tick in ticks {
            let x = plotLeft + tick * pixelsPerSecond
            lines.append(##"<line x1="\##(n(x))" y1="\##(n(top))" x2="\##(n(x))" y2="\##(n(bottom))" stroke="#000000" stroke-opacity="0.12"/>"##)
        }
    }

    private mutating func drawAxis(top: Double) {
        let y = top + 4
        lines.append(##"<line x1="\##(n(plotLeft))" y1="\##(n(y))" x2="\##(n(plotLeft + plotWidth))" y2="\##(n(y))" stroke="#000000"/>"##)
        for tick in ticks {
            let x = plotLeft + tick * pixelsPerSecond
            lines.append(##"<line x1="\##(n(x))" y1="\##(n(y))" x2="\##(n(x))" y2="\##(n(y + L.tickLength))" stroke="#000000"/>"##)
            lines.append(##"<text x="\##(n(x))" y="\##(n(y + L.tickLength + L.fontSize + 1))" text-anchor="middle">\##(RenderStyle.number(tick * unit.scale))</text>"##)
        }
        lines.append(##"<text x="\##(n(plotLeft + plotWidth + 8))" y="\##(n(y + L.tickLength + L.fontSize + 1))">time (\##(unit.name))</text>"##)
    }

    private mutating func drawLegend(top: Double) {
        let events = panels.flatMap(\.timeline.events)
        var x = plotLeft
        for entry in RenderStyle.legend(for: events) {
            lines.append(##"<rect x="\##(n(x))" y="\##(n(top + 4))" width="\##(n(L.legendSwatch))" height="\##(n(L.legendSwatch))" fill="\##(entry.colour.hex)"/>"##)
            lines.append(##"<text x="\##(n(x + L.legendSwatch + 5))" y="\##(n(top + 4 + L.legendSwatch / 2))" dominant-baseline="central">\##(escape(entry.name))</text>"##)
            x += L.legendEntryWidth
        }
        if events.contains(where: { $0.action.chunk > 0 }) {
            lines.append(##"<text x="\##(n(x))" y="\##(n(top + 4 + L.legendSwatch / 2))" dominant-baseline="central" fill="#444444">lighter = later chunk</text>"##)
        }
    }

    /// A coordinate with two decimals at most: exact enough, and short.
    private func n(_ value: Double) -> String { RenderStyle.number((value * 100).rounded() / 100) }

    private func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
