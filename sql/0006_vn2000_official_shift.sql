-- Make PostGIS apply the official VN-2000 → WGS 84 shift ('VN-2000 to WGS 84 (2)', Decision
-- 05/2007/QĐ-BTNMT) that the srtext/proj4text of these rows carry. With auth_name 'EPSG',
-- PostGIS asks PROJ's database for EPSG:9210 and PROJ picks 'VN-2000 to WGS 84 (1)', about
-- 0.8 m away in the city. PostGIS tries auth_name:auth_srid first, then srtext: an authority
-- PROJ does not know sends it to the srtext with its TOWGS84.
UPDATE spatial_ref_sys SET auth_name = 'IOC'
WHERE srid IN (3405, 3406, 4756, 9205, 9206, 9207, 9208, 9209, 9210, 9211, 9212, 9213, 9214,
               9215, 9216, 9217, 9218)
  AND (srtext LIKE '%TOWGS84[-191.90441429%' OR proj4text LIKE '%+towgs84=-191.90441429%');
