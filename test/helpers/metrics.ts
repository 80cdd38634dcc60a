// Reads one sample from Prometheus text exposition.

export function metricValue (text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$/.exec(line)
    if (match === null || match[1] !== name) continue
    const present = Object.fromEntries(
      (match[3] ?? '')
        .split(',')
        .filter(Boolean)
        .map((pair) => {
          const [key, value] = pair.split('=')
          return [key, JSON.parse(value ?? '""') as string]
        })
    )
    if (
      Object.entries(labels).every(([key, value]) => present[key] === value) &&
      Object.keys(present).length === Object.keys(labels).length
    ) {
      return Number(match[4])
    }
  }
  return 0
}
