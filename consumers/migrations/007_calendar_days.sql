-- One-off days off and make-up working days (ngày nghỉ bù, làm bù) that the office imports
-- (`sohoa campaign calendar import`): for every site (the province), a unit's sites, or one
-- site. They override the weekdays and the public holidays in forecasts, the planned line,
-- reports and the alerts' gauges (consumers/forecast.py); a site entry wins over its unit's,
-- a unit's over the province's.
CREATE TABLE calendar_days (
    scope_kind  text NOT NULL CHECK (scope_kind IN ('all', 'unit', 'site')),
    scope       text NOT NULL DEFAULT '',   -- '' for all; the unit as the plan names it; site_id
    day         date NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('off', 'work')),
    note        text NOT NULL DEFAULT '',
    source      text,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope_kind, scope, day),
    CHECK ((scope_kind = 'all') = (scope = ''))
);
