/**
 * The types tigo-execd's Grafana JSON must satisfy, built from Grafana's published ones
 * (npm @grafana/schema 11.6.16, the newest Grafana 11, pinned in package.json). The dashboard's
 * floor is Grafana 10.4, but @grafana/schema 10.4.19 lacks the time series' `insertNulls`, which
 * Grafana 10.4's time series panel has ("Disconnect values"): the 11.6 types are the more complete.
 *
 * Grafana cannot run here, so its types judge the JSON: generate.mjs writes each JSON file
 * as an object literal with `as const satisfies` one of the types below, and `tsc --noEmit`
 * (strict) refuses a key the types do not know (excess-property check), a wrong enum string,
 * a missing required key and a value of the wrong type.
 *
 * Accepted differences between the JSON and the published types, each on purpose:
 * 1. Enums: the JSON has strings, the types have TypeScript enums, which refuse even the right
 *    string. `Loose` maps every enum to the union of its string (or number) values.
 * 2. `__inputs`, `__elements`, `__requires` at the top: the envelope of an exported dashboard,
 *    read by Grafana's import page (DashboardImport) and not part of the dashboard model.
 *    Their shape is typed here (`ExportEnvelope`), after Grafana's exporter (DashboardExporter.ts).
 * 3. A query variable's `definition`: the query editor's text of the variable's query, which
 *    Grafana's exporter writes and the schema omits (VariableModel has `query` only).
 * 4. `targets`: @grafana/schema types a query as DataQuery (refId, datasource, hide, queryType)
 *    only; each data source adds its own keys. The InfluxQL keys we use are typed here
 *    (`InfluxQuery`) after Grafana's public/app/plugins/datasource/influxdb/types.ts.
 * 5. Panel options and field `custom` of the core panels we use: typed with each panel's
 *    published panelcfg types, but every key optional (`Open`): Grafana fills a missing option
 *    from the panel plugin's defaults when it loads a panel. The generated Canvas panel is
 *    checked with its options required (`Loose`, the whole Canvas Options type).
 * 6. A Canvas element's `config` is `unknown` in the schema; Grafana's own type for a
 *    rectangle/text element is TextConfig in public/app/features/canvas/types.ts (not
 *    published on npm), copied here as `CanvasTextConfig`.
 * 7. The state timeline's `spanNulls` and `insertNulls` field options: its module.tsx registers
 *    them (with the time series' SpanNullsEditor and InsertNullsEditor), its panelcfg.cue, from
 *    which the published FieldConfig type is generated, does not list them.
 */
import type {
  Dashboard,
  DataQuery,
  Panel,
  RowPanel,
  VariableModel,
  ColorDimensionConfig,
  TextDimensionConfig,
} from '@grafana/schema';
import type { Options as CanvasOptions, CanvasElementOptions } from '@grafana/schema/dist/esm/raw/composable/canvas/panelcfg/x/CanvasPanelCfg_types.gen.d.ts';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen.d.ts';
import type {
  Options as TimeSeriesOptions,
  FieldConfig as TimeSeriesFieldConfig,
} from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen.d.ts';
import type { Options as BarGaugeOptions } from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen.d.ts';
import type {
  Options as TableOptions,
  FieldConfig as TableFieldConfig,
} from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen.d.ts';
import type {
  Options as StateTimelineOptions,
  FieldConfig as StateTimelineFieldConfig,
} from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen.d.ts';

/** A JSON value of type T: enums as their values' literal types, read-only (difference 1). */
export type Loose<T> = T extends string
  ? `${T}`
  : T extends number
    ? number extends T ? T : NumberOf<`${T}`>
    : T extends boolean | null | undefined
      ? T
      : T extends ReadonlyArray<infer U>
        ? ReadonlyArray<Loose<U>>
        : T extends object
          ? { readonly [K in keyof T]: Loose<T[K]> }
          : T;

type NumberOf<S> = S extends `${infer N extends number}` ? N : never;

/** Loose, with every key at every depth optional (difference 5). */
export type Open<T> = T extends string | number | boolean | null | undefined
  ? Loose<T>
  : T extends ReadonlyArray<infer U>
    ? ReadonlyArray<Open<U>>
    : T extends object
      ? { readonly [K in keyof T]?: Open<T[K]> }
      : T;

/** Difference 4: the InfluxQL query keys (Grafana's InfluxQuery, raw query mode). */
export interface InfluxQuery extends DataQuery {
  query?: string;
  rawQuery?: boolean;
  resultFormat?: 'time_series' | 'table' | 'logs';
  alias?: string;
}

/** Difference 6: Grafana's TextConfig of a rectangle/text/metric-value element. */
export interface CanvasTextConfig {
  text?: TextDimensionConfig;
  color?: ColorDimensionConfig;
  size?: number;
  align: 'left' | 'center' | 'right';
  valign: 'top' | 'middle' | 'bottom';
}

/** Difference 7. */
interface NullsOptions {
  spanNulls?: boolean | number;
  insertNulls?: boolean | number;
}

type PanelBase = Omit<Panel, 'targets' | 'options' | 'fieldConfig' | 'type'> & {
  targets?: InfluxQuery[];
};

/** A panel of one core type: its options and custom field config from its panelcfg types. */
type TypedPanel<Type extends string, O, C = Record<string, never>> = Loose<PanelBase & { type: Type }> & {
  readonly options?: Open<O>;
  readonly fieldConfig?: Loose<Omit<NonNullable<Panel['fieldConfig']>, 'defaults'>> & {
    readonly defaults: Loose<Omit<NonNullable<Panel['fieldConfig']>['defaults'], 'custom'>> & {
      readonly custom?: Open<C>;
    };
  };
};

/** The generated Canvas panel: options required and checked in full, elements' config too. */
export type CanvasPanel = Loose<PanelBase & { type: 'canvas' }> & {
  readonly fieldConfig?: Loose<NonNullable<Panel['fieldConfig']>>;
  readonly options: Loose<Omit<CanvasOptions, 'root'>> & {
    readonly root: Loose<Omit<CanvasOptions['root'], 'elements'>> & {
      readonly elements: ReadonlyArray<
        Loose<Omit<CanvasElementOptions, 'config'>> & { readonly config?: Loose<CanvasTextConfig> }
      >;
    };
  };
};

export type DashboardPanel =
  | TypedPanel<'stat', StatOptions>
  | TypedPanel<'timeseries', TimeSeriesOptions, TimeSeriesFieldConfig>
  | TypedPanel<'bargauge', BarGaugeOptions>
  | TypedPanel<'table', TableOptions, TableFieldConfig>
  | TypedPanel<'state-timeline', StateTimelineOptions, StateTimelineFieldConfig & NullsOptions>
  | CanvasPanel
  | Loose<Omit<RowPanel, 'panels'>> & { readonly panels?: ReadonlyArray<DashboardPanel> };

/** Difference 2: the export envelope (Grafana's DashboardExporter). */
interface ExportEnvelope {
  __inputs?: Array<{
    name: string;
    label: string;
    description?: string;
    type: 'datasource' | 'constant';
    pluginId?: string;
    pluginName?: string;
    value?: string;
  }>;
  __elements?: Record<string, unknown>;
  __requires?: Array<{ type: 'grafana' | 'datasource' | 'panel'; id: string; name: string; version: string }>;
}

/** Difference 3: a variable's `definition`. */
type Variable = Loose<VariableModel> & { readonly definition?: string };

export type DashboardJson = Loose<Omit<Dashboard, 'panels' | 'templating'> & ExportEnvelope> & {
  readonly panels?: ReadonlyArray<DashboardPanel>;
  readonly templating?: { readonly list?: ReadonlyArray<Variable> };
};
