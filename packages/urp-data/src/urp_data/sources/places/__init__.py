"""Places: the offline gazetteer (GeoNames), online geocoders (Nominatim, Photon) and OSM POIs."""
